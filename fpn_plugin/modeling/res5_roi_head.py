"""The C4 Faster R-CNN of the ResNet paper: res4 features, and ``layer4`` run on each RoI."""
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

from .resnet import make_resnet_stage

__all__ = ["PluginRes5ROIHeads"]


@ROI_HEADS_REGISTRY.register()
class PluginRes5ROIHeads(Res5ROIHeads):
    """detectron2's ``Res5ROIHeads`` whose per-RoI network is the plugin ResNet's ``layer4``.

    Use it with ``MODEL.BACKBONE.NAME: build_plugin_resnet_backbone`` and
    ``MODEL.PLUGIN_RESNET.OUT_FEATURES: ["res4"]`` (stride 16): the backbone then stops after
    ``layer3`` and this head owns ``layer4`` (``roi_heads.res5``), built with the same depth, norm
    and stride placement, so that the checkpointer loads it from the same ImageNet file. Pooling
    (``MODEL.ROI_BOX_HEAD.POOLER_*``, 14x14 by default) then the stride-2 ``layer4`` gives 7x7
    maps, averaged into one vector per RoI (512 channels for ResNet-18/34, 2048 for 50+).
    ``MODEL.BACKBONE.FREEZE_AT`` does not reach this head (as in detectron2).
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        c = cfg.MODEL.PLUGIN_RESNET
        stage = make_resnet_stage(c.DEPTH, 4, norm=c.NORM, stride_in_1x1=c.STRIDE_IN_1X1)
        return stage, stage[-1].out_channels
