"""VGG16 as in the Faster R-CNN paper, its fc6/fc7 box head, and VGG16-FPN.

Module names follow torchvision's ``vgg16()`` exactly (``features.N`` for the conv body,
``classifier.0``/``classifier.3`` for fc6/fc7), so a torchvision or Caffe VGG16 state dict
maps onto the plugin by prefixing its keys (see :mod:`fpn_plugin.checkpoint.vgg`).

Feature names and the ``features`` index whose output each one is:

======== ===== ======== ====== ==========================================
name     index stride   ch.    note
======== ===== ======== ====== ==========================================
conv1_2  3     1        64     after ReLU
conv2_2  8     2        128
conv3_3  15    4        256
conv4_3  22    8        512
conv5_3  29    16       512    Faster R-CNN's feature map (RPN + RoI pool)
pool5    30    32       512    torchvision's 5th max-pool, for FPN
======== ===== ======== ====== ==========================================

VGG16-FPN uses ``conv3_3, conv4_3, conv5_3, pool5`` (strides 4, 8, 16, 32) as its four
levels: every level comes from ImageNet-trained layers (pool5 is torchvision's own
``features.30``), so no randomly initialised conv is added to the bottom-up path.
The stride-2 ``conv2_2`` would make P2 four times larger than ResNet-FPN's for the same image.
"""
from typing import Dict, List, Sequence

import torch
from fvcore.nn.weight_init import c2_msra_fill
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.roi_heads.box_head import ROI_BOX_HEAD_REGISTRY

from .fpn import fpn_on

__all__ = ["VGG16", "VGG16BoxHead", "build_vgg16_backbone", "build_vgg16_fpn_backbone"]

# torchvision's vgg16 "D" configuration: channels per conv, "M" for a 2x2 max-pool. Written
# out: torchvision's own cfgs/make_layers are not public (not in torchvision.models.vgg.__all__).
_VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"] + [512, 512, 512, "M"] * 2
# Index in ``features`` of each of the 13 convs (conv1_1 .. conv5_3), as in torchvision.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# Index in torchvision's ``classifier`` of fc6 and fc7 (classifier.6 is ImageNet's fc8).
VGG16_FC_INDICES = (0, 3)

# name -> (index in ``features`` whose output it is, stride, channels)
_FEATURES = {
    "conv1_2": (3, 1, 64),
    "conv2_2": (8, 2, 128),
    "conv3_3": (15, 4, 256),
    "conv4_3": (22, 8, 512),
    "conv5_3": (29, 16, 512),
    "pool5": (30, 32, 512),
}
_CHANNELS_ERROR = (
    "VGG16 takes 3-channel images, but MODEL.PIXEL_MEAN has {} values: set MODEL.PIXEL_MEAN "
    "and MODEL.PIXEL_STD to 3 values each."
)


def _make_features(num_layers: int) -> nn.Sequential:
    """torchvision's ``vgg16().features``, truncated to its first ``num_layers`` modules."""
    layers: List[nn.Module] = []
    in_channels = 3
    for v in _VGG16_PLAN:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers[:num_layers])


class VGG16(Backbone):
    """VGG16's conv body (``conv1_1`` .. ``conv5_3``, optionally ``pool5``), a detectron2 Backbone.

    Computes exactly what torchvision's ``vgg16().features[:n]`` computes; only the layers up to
    the last requested feature are built.
    """

    def __init__(self, out_features: Sequence[str] = ("conv5_3",), freeze_convs: int = 4):
        """
        Args:
            out_features: names of the features to return, from ``conv1_2``, ``conv2_2``,
                ``conv3_3``, ``conv4_3``, ``conv5_3``, ``pool5``.
            freeze_convs: how many of the leading conv layers get ``requires_grad=False``:
                0 trains all, 4 (Faster R-CNN) freezes conv1_1, conv1_2, conv2_1 and conv2_2.
        """
        super().__init__()
        unknown = [f for f in out_features if f not in _FEATURES]
        if not out_features or unknown:
            raise ValueError(
                f"VGG16 output features {list(out_features)!r}: "
                f"{'unknown ' + repr(unknown) if unknown else 'none requested'}. "
                f"Choose from {list(_FEATURES)} (MODEL.VGG.OUT_FEATURES, or MODEL.FPN.IN_FEATURES "
                "for VGG16-FPN)."
            )
        if not 0 <= freeze_convs <= len(VGG16_CONV_INDICES):
            raise ValueError(
                f"MODEL.VGG.FREEZE_CONVS is {freeze_convs}, but VGG16 has "
                f"{len(VGG16_CONV_INDICES)} conv layers: use a number from 0 to 13."
            )
        # Sorted by depth, so forward() can return them in high-to-low resolution order.
        self._out_features = sorted(out_features, key=lambda f: _FEATURES[f][0])
        self._out_indices = {_FEATURES[f][0]: f for f in self._out_features}
        self._out_feature_strides = {f: _FEATURES[f][1] for f in self._out_features}
        self._out_feature_channels = {f: _FEATURES[f][2] for f in self._out_features}
        self.features = _make_features(max(self._out_indices) + 1)
        self._init_weights()
        self.freeze_convs = freeze_convs
        for index in VGG16_CONV_INDICES[:freeze_convs]:
            if index < len(self.features):
                for p in self.features[index].parameters():
                    p.requires_grad_(False)

    def _init_weights(self) -> None:
        # torchvision's VGG init (He normal, fan_out; zero bias), so a model trained without
        # weights behaves like its twin.
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                c2_msra_fill(m)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._out_indices:
                outputs[self._out_indices[index]] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_vgg16_backbone(cfg, input_shape: ShapeSpec) -> VGG16:
    """VGG16 conv body from ``MODEL.VGG`` (the Faster R-CNN paper's backbone by default)."""
    if input_shape.channels != 3:
        raise ValueError(_CHANNELS_ERROR.format(input_shape.channels))
    return VGG16(out_features=cfg.MODEL.VGG.OUT_FEATURES, freeze_convs=cfg.MODEL.VGG.FREEZE_CONVS)


@BACKBONE_REGISTRY.register()
def build_vgg16_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """VGG16-FPN: ``MODEL.FPN.IN_FEATURES`` of VGG16 (by default conv3_3..pool5) -> p2..p6.

    The bottom-up VGG16 returns exactly ``MODEL.FPN.IN_FEATURES`` (``MODEL.VGG.OUT_FEATURES``
    is not used here). P6 is a stride-2 max-pool of P5 (``LastLevelMaxPool``), as in the FPN
    paper's Faster R-CNN. The FPN pads images to a multiple of its coarsest stride (32).
    """
    if input_shape.channels != 3:
        raise ValueError(_CHANNELS_ERROR.format(input_shape.channels))
    bottom_up = VGG16(out_features=cfg.MODEL.FPN.IN_FEATURES, freeze_convs=cfg.MODEL.VGG.FREEZE_CONVS)
    return fpn_on(bottom_up, cfg)


@ROI_BOX_HEAD_REGISTRY.register()
class VGG16BoxHead(nn.Module):
    """VGG16's own fc6/fc7 as the box head: flatten 512x7x7 -> fc6 (4096) -> fc7 (4096).

    ``classifier`` is torchvision's ``vgg16().classifier[0:6]`` (Linear, ReLU, Dropout, Linear,
    ReLU, Dropout), so fc6/fc7 load from ImageNet weights with their torchvision names. It needs
    RoI features of 512 channels at 7x7 (``ROI_BOX_HEAD.POOLER_RESOLUTION: 7`` on conv5_3), the
    input fc6 was trained on.
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, dropout: float = 0.5):
        """
        Args:
            input_shape: shape of the pooled RoI features; must be 512 x 7 x 7.
            dropout: dropout probability after fc6 and after fc7 (torchvision: 0.5).
        """
        super().__init__()
        got = (input_shape.channels, input_shape.height, input_shape.width)
        if got != (512, 7, 7):
            raise ValueError(
                f"VGG16BoxHead gets RoI features of shape {got} (channels, height, width), but "
                "VGG16's fc6 takes 512 x 7 x 7 = 25088 inputs. Pool conv5_3 of the VGG16 backbone "
                "(MODEL.ROI_HEADS.IN_FEATURES: ['conv5_3']) with MODEL.ROI_BOX_HEAD."
                "POOLER_RESOLUTION: 7, or use another box head (e.g. FastRCNNConvFCHead for FPN)."
            )
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
        )
        for m in self.classifier:
            if isinstance(m, nn.Linear):  # torchvision's classifier init
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"input_shape": input_shape, "dropout": cfg.MODEL.VGG.BOX_HEAD_DROPOUT}

    @property
    def fc6(self) -> nn.Linear:
        return self.classifier[0]

    @property
    def fc7(self) -> nn.Linear:
        return self.classifier[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channel-major flatten, as torchvision's VGG.forward does before its classifier.
        return self.classifier(torch.flatten(x, start_dim=1))

    @property
    @torch.jit.unused
    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=4096)
