"""Prediction on new images: the batch ``Predictor``, the CPU fast path and the ``predict.py`` command."""
from .fast_cpu import optimize_for_cpu  # noqa: F401
from .images import ImageLoadError, load_image  # noqa: F401
from .predictor import Predictor  # noqa: F401

__all__ = ["Predictor", "optimize_for_cpu", "load_image", "ImageLoadError"]
