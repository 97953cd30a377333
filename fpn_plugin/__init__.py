"""fpn_plugin: VGG16, ResNet and FPN backbones and the tools around them for detectron2."""
from . import compat

# Before anything else imports detectron2's submodules: see compat's docstring.
compat.apply()

__version__ = "0.1.0"
