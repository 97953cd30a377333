"""Backbones and ROI heads, registered in detectron2's registries on import."""
from . import resnet  # noqa: F401,E402  (plugin ResNet backbone)
