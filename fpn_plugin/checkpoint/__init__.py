"""Loading weights in every format users bring (torchvision, Caffe, detectron2 model zoo)."""
from . import torchvision_urls
from .checkpointer import (  # noqa: F401
    MSRA_FORMAT,
    TORCHVISION_FORMAT,
    CheckpointMismatchError,
    PixelFormat,
    PixelFormatMismatchError,
    PluginCheckpointer,
)

# `torchvision://NAME` in MODEL.WEIGHTS, for any detectron2 PathManager user.
torchvision_urls.register()
