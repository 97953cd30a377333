"""Loading weights in every format users bring (torchvision, Caffe, detectron2 model zoo)."""
from . import safe_load, torchvision_urls
from .inference_model import load_inference_model
from .loading import PluginCheckpointer, install_for_detectron2
from .mismatch import CheckpointMismatchError
from .pixel_format import MSRA_FORMAT, TORCHVISION_FORMAT, PixelFormat, PixelFormatMismatchError  # noqa: F401
from .safe_load import UnsafeWeightsError

__all__ = [
    "CheckpointMismatchError",
    "PixelFormatMismatchError",
    "PluginCheckpointer",
    "UnsafeWeightsError",
    "load_inference_model",
]

# `torchvision://NAME` in MODEL.WEIGHTS, for any detectron2 PathManager user.
torchvision_urls.register()
# detectron2 0.6 and main read .pkl with plain pickle.load: DetectionCheckpointer now reads safely.
safe_load.install()
# detectron2's DetectionCheckpointer (DefaultPredictor, DefaultTrainer) converts and checks
# plugin models' weights as PluginCheckpointer does.
install_for_detectron2()
