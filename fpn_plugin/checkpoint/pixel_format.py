"""The input pixels weights were trained on, and the check that a model's config gives them.

A :class:`PixelFormat` is a channel order, a mean and a std on 0-255 pixels (and, for
Bottleneck ResNets, where the stride sits); the formats of the weights users bring are defined
here once (:data:`MSRA_FORMAT`, :data:`TORCHVISION_FORMAT`, :data:`CAFFE_VGG16_FORMAT`).
:func:`pixel_format_problems` lists where a built model differs from one.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .mismatch import CheckpointMismatchError
from .resnet_formats import find_resnet_modules

__all__ = ["MSRA_FORMAT", "TORCHVISION_FORMAT", "PixelFormat", "PixelFormatMismatchError"]


class PixelFormatMismatchError(CheckpointMismatchError):
    """The weights expect other input pixels (format, mean, std) or stride placement."""


@dataclass(frozen=True)
class PixelFormat:
    """How the images were given to a network when its weights were trained."""

    name: str
    input_format: Optional[str]  # "BGR" / "RGB"; None when the file does not say
    mean: Sequence[float]  # on 0-255 pixels, in input_format's channel order
    std: Sequence[float]
    stride_in_1x1: Optional[bool] = None  # for Bottleneck ResNets; None: not applicable

    def describe(self) -> str:
        fmt = self.input_format or "channel order not recorded"
        return f"{fmt}, MODEL.PIXEL_MEAN {list(self.mean)}, MODEL.PIXEL_STD {list(self.std)}"

    def as_config(self) -> Dict[str, object]:
        """The config keys that give these pixels: ``{"INPUT.FORMAT": ..., "MODEL.PIXEL_MEAN":
        [...], "MODEL.PIXEL_STD": [...]}``."""
        return {"INPUT.FORMAT": self.input_format, "MODEL.PIXEL_MEAN": list(self.mean),
                "MODEL.PIXEL_STD": list(self.std)}


# detectron2's defaults for its MSRA (Caffe2) ResNets: BGR 0-255, std 1.
MSRA_FORMAT = PixelFormat("MSRA/detectron2", "BGR", (103.53, 116.28, 123.675), (1.0, 1.0, 1.0), True)
# torchvision's ImageNet normalisation (RGB scaled to 0-1, then mean and std), on 0-255 pixels.
TORCHVISION_FORMAT = PixelFormat(
    "torchvision", "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), False
)
# Caffe VGG16 (py-faster-rcnn and its PyTorch ports): BGR in 0-255 minus the Caffe means.
CAFFE_VGG16_FORMAT = PixelFormat("Caffe VGG16", "BGR", (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0))

# Mean tolerance (0-255 scale) accepts Detectron1's MSRA means [102.98, 115.95, 122.77] for
# detectron2's [103.53, 116.28, 123.675] but not a swapped RGB/BGR order (20 apart).
_MEAN_ATOL = 1.0
_STD_RTOL = 0.05


def pixel_format_problems(model, fmt: PixelFormat) -> List[str]:
    """What in the model's config differs from the format the weights expect (empty: nothing)."""
    problems = []
    input_format = getattr(model, "input_format", None)
    if fmt.input_format and input_format and input_format != fmt.input_format:
        problems.append(f"INPUT.FORMAT is {input_format}, not {fmt.input_format}")
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if mean is not None:
        mean = [round(float(x), 3) for x in mean.flatten()]
        if len(mean) != len(fmt.mean) or any(abs(a - b) > _MEAN_ATOL for a, b in zip(mean, fmt.mean)):
            problems.append(f"MODEL.PIXEL_MEAN is {mean}, not {list(fmt.mean)}")
    if std is not None:
        std = [round(float(x), 3) for x in std.flatten()]
        if len(std) != len(fmt.std) or any(abs(a - b) > _STD_RTOL * b for a, b in zip(std, fmt.std)):
            problems.append(f"MODEL.PIXEL_STD is {std}, not {list(fmt.std)}")
    if fmt.stride_in_1x1 is not None:
        resnets, stages = find_resnet_modules(model)
        for prefix, module in list(resnets.items()) + list(stages.items()):
            # Only Bottleneck blocks have a 1x1 conv that can take the stride.
            has_1x1 = module.depth >= 50 if module in resnets.values() else hasattr(module[0], "conv3")
            if has_1x1 and module.stride_in_1x1 != fmt.stride_in_1x1:
                problems.append(
                    f"MODEL.PLUGIN_RESNET.STRIDE_IN_1X1 is {module.stride_in_1x1} at '{prefix}', "
                    f"not {fmt.stride_in_1x1}"
                )
                break
    return problems


def detectron2_format(state) -> Tuple[PixelFormat, bool]:
    """The format a detectron2 checkpoint expects: its own pixel stats, else MSRA (assumed)."""
    if "pixel_mean" in state and "pixel_std" in state:
        mean = tuple(float(x) for x in state["pixel_mean"].flatten())
        std = tuple(float(x) for x in state["pixel_std"].flatten())
        return PixelFormat("the checkpoint's recorded", None, mean, std, None), False
    # detectron2's builtin R50/R101 detectors all start from the MSRA weights.
    return MSRA_FORMAT, True
