"""fpn_plugin: VGG16, ResNet and FPN backbones and the tools around them for detectron2."""
from . import compat

# Before anything else imports detectron2's submodules: see compat's docstring.
compat.apply()

# Imported for their registrations in detectron2's registries.
from . import modeling  # noqa: E402,F401
from . import checkpoint  # noqa: E402,F401  (torchvision:// in MODEL.WEIGHTS)
from . import data  # noqa: E402,F401  (datasets: voc_0712_trainval, shapes_*)
from .config import add_fpn_plugin_config  # noqa: E402,F401

__version__ = "0.1.0"
