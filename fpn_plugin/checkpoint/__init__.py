"""Loading weights in every format users bring (torchvision, Caffe, detectron2 model zoo)."""
from . import safe_load, torchvision_urls
from .checkpointer import (  # noqa: F401
    MSRA_FORMAT,
    TORCHVISION_FORMAT,
    CheckpointMismatchError,
    PixelFormat,
    PixelFormatMismatchError,
    PluginCheckpointer,
    install_for_detectron2,
)
from .safe_load import UnsafeWeightsError  # noqa: F401

# `torchvision://NAME` in MODEL.WEIGHTS, for any detectron2 PathManager user.
torchvision_urls.register()
# detectron2 0.6 and main read .pkl with plain pickle.load: DetectionCheckpointer now reads safely.
safe_load.install()
# detectron2's DetectionCheckpointer (DefaultPredictor, DefaultTrainer) converts and checks
# plugin models' weights as PluginCheckpointer does.
install_for_detectron2()
