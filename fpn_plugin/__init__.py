"""fpn_plugin: VGG16, ResNet and FPN backbones and the tools around them for detectron2.

The public API::

    from fpn_plugin import add_fpn_plugin_config, Trainer, Predictor, optimize_for_cpu, model_zoo

Importing the package registers its backbones, datasets and weight readers in detectron2's
registries; ``Trainer``, ``Predictor`` and ``optimize_for_cpu`` are imported on first use, so
``import fpn_plugin`` stays cheap for code that only wants the backbones.
"""
import importlib

from . import compat

# Before anything else imports detectron2's submodules: see compat's docstring.
compat.apply()

# Imported for their registrations in detectron2's registries.
from . import modeling  # noqa: E402,F401
from . import checkpoint  # noqa: E402,F401  (torchvision:// in MODEL.WEIGHTS)
from . import data  # noqa: E402,F401  (datasets: voc_0712_trainval, shapes_*)
from . import model_zoo  # noqa: E402,F401
from .config import add_fpn_plugin_config, load_config  # noqa: E402,F401

__version__ = "0.1.0"

__all__ = ["add_fpn_plugin_config", "load_config", "model_zoo", "Trainer", "Predictor", "optimize_for_cpu"]

# Public names imported on first use -> their module.
_LAZY = {
    "Trainer": ".engine",
    "Predictor": ".inference",
    "optimize_for_cpu": ".inference.fast_cpu",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'fpn_plugin' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
