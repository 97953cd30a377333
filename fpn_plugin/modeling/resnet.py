"""ResNet-18/34/50/101/152 with torchvision's module names, as a detectron2 ``Backbone``.

The modules are named exactly like ``torchvision.models.resnet*`` (``conv1``, ``bn1``,
``layer1``..``layer4``; the blocks are :mod:`fpn_plugin.modeling.resnet_blocks`), so a
torchvision ImageNet state dict loads with no renaming (minus its ``fc`` classifier), and a
detectron2 one through the renaming pre-hook of :mod:`fpn_plugin.modeling.resnet_names`. The
outputs are named like detectron2's ResNet: ``res2``..``res5`` (``layer1``..``layer4``), strides
4..32.
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone

from .resnet_blocks import STAGE_NAMES, init_convs, make_resnet_stage, norm_layer
from .resnet_config import check_resnets_keys
from .resnet_names import load_detectron2_resnet_names

__all__ = ["PluginResNet", "build_plugin_resnet_backbone"]


class PluginResNet(Backbone):
    """ResNet with torchvision's module names and detectron2's outputs ``res2``..``res5``.

    Stages after the last requested output are not built (as in detectron2's ResNet), so the C4
    backbone (``out_features=["res4"]``) has no ``layer4``: its ROI head owns that stage.
    """

    def __init__(self, depth: int, out_features: Sequence[str], *, norm: str = "FrozenBN",
                 stride_in_1x1: bool = False, freeze_at: int = 0, in_channels: int = 3):
        """
        Args:
            depth: 18, 34, 50, 101 or 152.
            out_features: a subset of ``res2``..``res5`` to return from ``forward``.
            norm: see :func:`detectron2.layers.get_norm` ("FrozenBN", "BN", "SyncBN", "GN").
            stride_in_1x1: see :class:`~fpn_plugin.modeling.resnet_blocks.Bottleneck` (True for
                MSRA weights, False for torchvision).
            freeze_at: detectron2's ``MODEL.BACKBONE.FREEZE_AT``: 0 freezes nothing, 1 the stem
                (conv1/bn1), 2 the stem and res2 (layer1), ... 5 everything.
            in_channels: input channels.
        """
        super().__init__()
        unknown = [f for f in out_features if f not in STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"out_features {list(out_features)} must be a non-empty subset of {STAGE_NAMES}."
            )
        self.depth = depth
        self.stride_in_1x1 = stride_in_1x1
        self._out_features = [f for f in STAGE_NAMES if f in out_features]
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(norm, 64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        init_convs(self)
        self._register_load_state_dict_pre_hook(load_detectron2_resnet_names, with_module=True)

        num_stages = STAGE_NAMES.index(self._out_features[-1]) + 1
        self.stage_names = []
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        for index in range(1, num_stages + 1):
            stage = make_resnet_stage(depth, index, norm=norm, stride_in_1x1=stride_in_1x1)
            self.add_module(f"layer{index}", stage)
            name = STAGE_NAMES[index - 1]
            self.stage_names.append(name)
            self._out_feature_strides[name] = 2 ** (index + 1)
            self._out_feature_channels[name] = stage[-1].out_channels
        self.freeze(freeze_at)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        x = self.maxpool(F.relu_(self.bn1(self.conv1(x))))
        outputs = {}
        for index, name in enumerate(self.stage_names, start=1):
            x = getattr(self, f"layer{index}")(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name],
                            stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    def freeze(self, freeze_at: int = 0) -> "PluginResNet":
        """Freeze the first ``freeze_at`` stages, with detectron2's ``ResNet.freeze`` meaning.

        Frozen parameters get ``requires_grad=False`` and their BatchNorm/SyncBatchNorm layers
        become :class:`FrozenBatchNorm2d` (GroupNorm stays, with frozen parameters).
        """
        if freeze_at >= 1:
            for p in list(self.conv1.parameters()) + list(self.bn1.parameters()):
                p.requires_grad = False
            self.bn1 = FrozenBatchNorm2d.convert_frozen_batchnorm(self.bn1)
        for index in range(1, len(self.stage_names) + 1):
            if freeze_at >= index + 1:
                getattr(self, f"layer{index}").freeze()
        return self


@BACKBONE_REGISTRY.register()
def build_plugin_resnet_backbone(cfg, input_shape: ShapeSpec) -> PluginResNet:
    """Build the plugin ResNet from ``cfg.MODEL.PLUGIN_RESNET`` and ``MODEL.BACKBONE.FREEZE_AT``."""
    check_resnets_keys(cfg)
    c = cfg.MODEL.PLUGIN_RESNET
    return PluginResNet(
        depth=c.DEPTH,
        out_features=c.OUT_FEATURES,
        norm=c.NORM,
        stride_in_1x1=c.STRIDE_IN_1X1,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels,
    )
