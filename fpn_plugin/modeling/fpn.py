"""FPN on the plugin ResNet: detectron2's own ``FPN`` class with a ``LastLevelMaxPool`` P6."""
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from .resnet import build_plugin_resnet_backbone

__all__ = ["build_plugin_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_plugin_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """The plugin ResNet (``MODEL.PLUGIN_RESNET``) with detectron2's FPN on top.

    ``MODEL.FPN.IN_FEATURES`` (normally res2..res5) become p2..p5, and P6 is a stride-2 max-pool
    of p5, exactly as in detectron2's ``build_resnet_fpn_backbone``, so the parameter names
    (``fpn_lateral2``, ``fpn_output5``, ...) match detectron2's checkpoints. The FPN's
    ``size_divisibility`` (32) makes detectron2's model pad every image to a multiple of 32, so
    any input size works.
    """
    bottom_up = build_plugin_resnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
