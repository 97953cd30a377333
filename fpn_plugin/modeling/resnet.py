"""ResNet-18/34/50/101/152 with torchvision's module names, as a detectron2 ``Backbone``.

The modules are named exactly like ``torchvision.models.resnet*`` (``conv1``, ``bn1``,
``layer1``..``layer4``; blocks with ``conv1/bn1/conv2/bn2/(conv3/bn3)/downsample.0/.1``), so a
torchvision ImageNet state dict loads with no renaming (minus its ``fc`` classifier). The outputs
are named like detectron2's ResNet: ``res2``..``res5`` (``layer1``..``layer4``), strides 4..32.
"""
import re
from typing import Dict, Sequence

import torch

import torch.nn.functional as F
from torch import nn

from detectron2.layers import CNNBlockBase, FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNetStage",
    "PluginResNet",
    "RESNET_SPECS",
    "make_resnet_stage",
    "resnet_out_channels",
    "build_plugin_resnet_backbone",
    "check_resnets_keys",
]

# depth -> (block class name, blocks per stage layer1..layer4), as in torchvision.
RESNET_SPECS = {
    18: ("BasicBlock", (2, 2, 2, 2)),
    34: ("BasicBlock", (3, 4, 6, 3)),
    50: ("Bottleneck", (3, 4, 6, 3)),
    101: ("Bottleneck", (3, 4, 23, 3)),
    152: ("Bottleneck", (3, 8, 36, 3)),
}
_STAGE_NAMES = ("res2", "res3", "res4", "res5")


def _norm(norm: str, channels: int) -> nn.Module:
    layer = get_norm(norm, channels)
    if layer is None:
        # torchvision's structure has a norm after every conv; weights expect one there.
        raise ValueError(
            "MODEL.PLUGIN_RESNET.NORM is empty: the plugin ResNet needs a norm layer after each "
            "conv (torchvision's structure). Use FrozenBN, BN, SyncBN or GN."
        )
    return layer


class BasicBlock(CNNBlockBase):
    """torchvision's ``BasicBlock`` (two 3x3 convs) for ResNet-18/34, with a detectron2 norm.

    ``freeze()`` (from :class:`CNNBlockBase`) works as in detectron2's blocks.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, norm: str = "FrozenBN",
                 stride_in_1x1: bool = False):
        """
        Args:
            in_channels: input channels.
            planes: channels of the convs (the output has ``planes * expansion``).
            stride: stride of the first conv and of the shortcut.
            norm: see :func:`detectron2.layers.get_norm`.
            stride_in_1x1: unused (a BasicBlock has no 1x1 conv); kept for a uniform signature.
        """
        out_channels = planes * self.expansion
        super().__init__(in_channels, out_channels, stride)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.downsample = _downsample(in_channels, out_channels, stride, norm)
        _init_weights(self)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as detectron2's blocks: one activation-sized tensor fewer
        return F.relu_(out)


class Bottleneck(CNNBlockBase):
    """torchvision's ``Bottleneck`` (1x1, 3x3, 1x1) for ResNet-50/101/152, with a detectron2 norm.

    ``stride_in_1x1`` puts the stride in ``conv1`` (the original MSRA/Caffe2 ResNet, which
    detectron2's ``R-50.pkl`` weights were trained with) instead of ``conv2`` (torchvision's
    "ResNet v1.5"). The weights have the same shapes either way, so only this flag tells them apart.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, norm: str = "FrozenBN",
                 stride_in_1x1: bool = False):
        out_channels = planes * self.expansion
        super().__init__(in_channels, out_channels, stride)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, stride=stride_1x1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride_3x3, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = _norm(norm, out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride, norm)
        _init_weights(self)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as detectron2's blocks: one activation-sized tensor fewer
        return F.relu_(out)


def _downsample(in_channels: int, out_channels: int, stride: int, norm: str):
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        _norm(norm, out_channels),
    )


def _init_weights(module: nn.Module) -> None:
    # torchvision's and detectron2's (c2_msra_fill) initialisation: He normal, fan_out.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def detectron2_block_key(rest: str) -> str:
    """A key inside a detectron2 ResNet block, in this module's names.

    ``conv2.norm.bias`` -> ``bn2.bias``, ``shortcut.norm.x`` -> ``downsample.1.x``,
    ``shortcut.weight`` -> ``downsample.0.weight``; other keys are returned unchanged.
    """
    rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", rest)
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    return re.sub(r"^shortcut\.", "downsample.0.", rest)


def detectron2_resnet_key(rest: str) -> str:
    """A key of detectron2's ResNet (``stem.conv1.norm.weight``, ``res2.0.conv1.weight``) in
    :class:`PluginResNet`'s names (``bn1.weight``, ``layer1.0.conv1.weight``); keys that are
    already the plugin's are returned unchanged."""
    if rest.startswith("stem.conv1.norm."):
        return "bn1." + rest[len("stem.conv1.norm."):]
    if rest.startswith("stem.conv1."):
        return "conv1." + rest[len("stem.conv1."):]
    m = re.match(r"^res([2-5])\.(\d+)\.(.*)$", rest)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.{detectron2_block_key(m.group(3))}"
    return rest


def _rename_keys(state_dict, prefix: str, rename) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + rename(key[len(prefix):])
        if new != key:
            state_dict[new] = state_dict.pop(key)


def _load_detectron2_resnet_names(module, state_dict, prefix, *args):
    # A load_state_dict pre-hook: detectron2 detector checkpoints load with plain
    # model.load_state_dict too (and then strictly, as torch checks every key).
    _rename_keys(state_dict, prefix, detectron2_resnet_key)


def _load_detectron2_block_names(module, state_dict, prefix, *args):
    _rename_keys(state_dict, prefix, lambda rest: re.sub(
        r"^(\d+)\.(.*)$", lambda m: f"{m.group(1)}.{detectron2_block_key(m.group(2))}", rest))


class ResNetStage(nn.Sequential):
    """One ResNet stage (torchvision's ``layerN``): a sequence of blocks.

    Attributes:
        torchvision_name: ``"layer1"``..``"layer4"``, the name of this stage in a torchvision
            state dict; the checkpointer uses it to find where a stage's weights go, e.g. when
            ``layer4`` is the C4 model's ROI head instead of part of the backbone.
        stride_in_1x1: where the blocks put their stride (see :class:`Bottleneck`).
    """

    def __init__(self, blocks: Sequence[nn.Module], torchvision_name: str, stride_in_1x1: bool):
        super().__init__(*blocks)
        self.torchvision_name = torchvision_name
        self.stride_in_1x1 = stride_in_1x1
        # As the C4 model's ROI head (roi_heads.res5.0.conv1.norm.* in detectron2's files).
        self._register_load_state_dict_pre_hook(_load_detectron2_block_names, with_module=True)

    def freeze(self) -> "ResNetStage":
        """Freeze every block (``requires_grad=False``, BatchNorm -> FrozenBatchNorm2d)."""
        for block in self:
            block.freeze()
        return self


def make_resnet_stage(depth: int, index: int, *, norm: str, stride_in_1x1: bool) -> ResNetStage:
    """Build torchvision's ``layer{index}`` of a ResNet of the given depth.

    Args:
        depth: 18, 34, 50, 101 or 152.
        index: 1..4 (``layer1`` has stride 1 relative to its input, the others 2).
        norm: see :func:`detectron2.layers.get_norm`.
        stride_in_1x1: see :class:`Bottleneck`.
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"ResNet depth {depth} is not one of {sorted(RESNET_SPECS)}.")
    block_name, counts = RESNET_SPECS[depth]
    block_class = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}[block_name]
    planes = 64 * 2 ** (index - 1)
    # The stage's input: the stem's 64 channels for layer1, else the previous stage's output.
    in_channels = 64 if index == 1 else planes // 2 * block_class.expansion
    blocks = []
    for i in range(counts[index - 1]):
        stride = 2 if (i == 0 and index > 1) else 1
        blocks.append(
            block_class(in_channels, planes, stride=stride, norm=norm, stride_in_1x1=stride_in_1x1)
        )
        in_channels = planes * block_class.expansion
    return ResNetStage(blocks, f"layer{index}", stride_in_1x1)


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
            stride_in_1x1: see :class:`Bottleneck` (True for MSRA weights, False for torchvision).
            freeze_at: detectron2's ``MODEL.BACKBONE.FREEZE_AT``: 0 freezes nothing, 1 the stem
                (conv1/bn1), 2 the stem and res2 (layer1), ... 5 everything.
            in_channels: input channels.
        """
        super().__init__()
        unknown = [f for f in out_features if f not in _STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"out_features {list(out_features)} must be a non-empty subset of {_STAGE_NAMES}."
            )
        self.depth = depth
        self.stride_in_1x1 = stride_in_1x1
        self._out_features = [f for f in _STAGE_NAMES if f in out_features]
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(norm, 64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        _init_weights(self)
        self._register_load_state_dict_pre_hook(_load_detectron2_resnet_names, with_module=True)

        num_stages = _STAGE_NAMES.index(self._out_features[-1]) + 1
        self.stage_names = []
        self._out_feature_strides = {}
        self._out_feature_channels = {}
        for index in range(1, num_stages + 1):
            stage = make_resnet_stage(depth, index, norm=norm, stride_in_1x1=stride_in_1x1)
            self.add_module(f"layer{index}", stage)
            name = _STAGE_NAMES[index - 1]
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


# detectron2's MODEL.RESNETS keys that the plugin ResNet reads from MODEL.PLUGIN_RESNET instead.
_SHARED_KEYS = ("DEPTH", "NORM", "STRIDE_IN_1X1", "OUT_FEATURES")
# detectron2's MODEL.RESNETS keys for variants the plugin ResNet does not build, with the value
# that means "plain ResNet" (RES2_OUT_CHANNELS follows the depth: checked separately).
_UNSUPPORTED_KEYS = {
    "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64, "STEM_OUT_CHANNELS": 64, "RES5_DILATION": 1,
    "DEFORM_ON_PER_STAGE": [False, False, False, False],
}


def check_resnets_keys(cfg) -> None:
    """Refuse ``MODEL.RESNETS`` settings that the plugin ResNet would silently ignore.

    The plugin backbones read ``MODEL.PLUGIN_RESNET``. A config that sets, say,
    ``MODEL.RESNETS.DEPTH: 101`` (as detectron2's configs do) but leaves
    ``MODEL.PLUGIN_RESNET.DEPTH`` at 50 would otherwise train a ResNet-50. A RESNETS key left
    at detectron2's default, or equal to its PLUGIN_RESNET twin, is fine.

    Raises:
        ValueError: naming the key, both values and the fix.
    """
    from detectron2.config import get_cfg

    default, ours, theirs = get_cfg().MODEL.RESNETS, cfg.MODEL.PLUGIN_RESNET, cfg.MODEL.RESNETS
    problems = []
    for key in _SHARED_KEYS:
        value = theirs.get(key)
        if _same(value, default.get(key)) or _same(value, ours.get(key)):
            continue
        problems.append(
            f"MODEL.RESNETS.{key} is {value!r} but the plugin ResNet reads MODEL.PLUGIN_RESNET.{key} "
            f"({ours.get(key)!r}): set MODEL.PLUGIN_RESNET.{key} {value!r}, or remove "
            f"MODEL.RESNETS.{key}"
        )
    for key, plain in _UNSUPPORTED_KEYS.items():
        value = theirs.get(key)
        if value is not None and not _same(value, plain):
            problems.append(
                f"MODEL.RESNETS.{key} is {value!r}: the plugin ResNet builds plain ResNets only "
                f"({key} {plain!r}); use detectron2's own ResNet backbones for this variant"
            )
    res2 = theirs.get("RES2_OUT_CHANNELS")
    if ours.DEPTH in RESNET_SPECS and res2 not in (default.RES2_OUT_CHANNELS, resnet_out_channels(ours.DEPTH, "res2")):
        problems.append(
            f"MODEL.RESNETS.RES2_OUT_CHANNELS is {res2} but a plugin ResNet-{ours.DEPTH} has "
            f"{resnet_out_channels(ours.DEPTH, 'res2')}: remove the key"
        )
    if problems:
        raise ValueError("The config's MODEL.RESNETS disagrees with the plugin ResNet:\n- " + "\n- ".join(problems))


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


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


def resnet_out_channels(depth: int, stage: str) -> int:
    """Channels of ``res2``..``res5`` for a depth (64..512 for 18/34, 256..2048 for 50+)."""
    expansion = 1 if RESNET_SPECS[depth][0] == "BasicBlock" else 4
    return 64 * 2 ** _STAGE_NAMES.index(stage) * expansion

