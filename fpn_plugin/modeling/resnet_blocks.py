"""torchvision's ResNet blocks and stages (``layer1``..``layer4``), with detectron2's norms.

The modules are named exactly like ``torchvision.models.resnet*``'s blocks
(``conv1/bn1/conv2/bn2/(conv3/bn3)/downsample.0/.1``), so torchvision weights load with no
renaming; each block is a detectron2 :class:`~detectron2.layers.CNNBlockBase`, so it freezes as
detectron2's blocks do.
"""
from typing import Sequence

import torch.nn.functional as F
from fvcore.nn.weight_init import c2_msra_fill
from torch import nn

from detectron2.layers import CNNBlockBase, get_norm

from .resnet_names import load_detectron2_block_names

__all__ = ["BasicBlock", "Bottleneck", "make_resnet_stage"]

# depth -> (block class name, blocks per stage layer1..layer4), as in torchvision.
RESNET_SPECS = {
    18: ("BasicBlock", (2, 2, 2, 2)),
    34: ("BasicBlock", (3, 4, 6, 3)),
    50: ("Bottleneck", (3, 4, 6, 3)),
    101: ("Bottleneck", (3, 4, 23, 3)),
    152: ("Bottleneck", (3, 8, 36, 3)),
}
# detectron2's names of the outputs of layer1..layer4.
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """``get_norm(norm, channels)``, refusing an empty norm (the plugin ResNet needs one)."""
    layer = get_norm(norm, channels)
    if layer is None:
        # torchvision's structure has a norm after every conv; weights expect one there.
        raise ValueError(
            "MODEL.PLUGIN_RESNET.NORM is empty: the plugin ResNet needs a norm layer after each "
            "conv (torchvision's structure). Use FrozenBN, BN, SyncBN or GN."
        )
    return layer


def init_convs(module: nn.Module) -> None:
    """torchvision's and detectron2's initialisation of every conv: He normal, fan_out."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            c2_msra_fill(m)


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
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.downsample = _downsample(in_channels, out_channels, stride, norm)
        init_convs(self)

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
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride_3x3, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = norm_layer(norm, out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride, norm)
        init_convs(self)

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
        norm_layer(norm, out_channels),
    )


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
        self._register_load_state_dict_pre_hook(load_detectron2_block_names, with_module=True)

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


def resnet_out_channels(depth: int, stage: str) -> int:
    """Channels of ``res2``..``res5`` for a depth (64..512 for 18/34, 256..2048 for 50+)."""
    expansion = 1 if RESNET_SPECS[depth][0] == "BasicBlock" else 4
    return 64 * 2 ** STAGE_NAMES.index(stage) * expansion
