"""FPN on the plugin backbones: detectron2's own ``FPN`` class with a ``LastLevelMaxPool`` P6."""
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from .resnet import build_plugin_resnet_backbone

__all__ = ["build_plugin_resnet_fpn_backbone"]


def fpn_on(bottom_up: Backbone, cfg) -> FPN:
    """detectron2's ``FPN`` from ``MODEL.FPN`` on ``bottom_up``, P6 a stride-2 max-pool of P5.

    The same call as detectron2's ``build_resnet_fpn_backbone`` makes, so the parameter names
    (``fpn_lateral2``, ``fpn_output5``, ...) match detectron2's checkpoints. The FPN's
    ``size_divisibility`` (the coarsest input stride, 32) makes detectron2's model pad every
    image to a multiple of it, so any input size works.

    Args:
        bottom_up: returns at least the features ``MODEL.FPN.IN_FEATURES`` names.
        cfg: the config (``MODEL.FPN.IN_FEATURES``, ``OUT_CHANNELS``, ``NORM``, ``FUSE_TYPE``).
    """
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_plugin_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """The plugin ResNet (``MODEL.PLUGIN_RESNET``) with detectron2's FPN on top.

    ``MODEL.FPN.IN_FEATURES`` (normally res2..res5) become p2..p5 and P6 pools p5, exactly as in
    detectron2's ``build_resnet_fpn_backbone`` (see :func:`fpn_on`).
    """
    return fpn_on(build_plugin_resnet_backbone(cfg, input_shape), cfg)
