"""Prediction on new images: the batch ``Predictor`` and the ``predict.py`` command."""
from .images import ImageLoadError, load_image  # noqa: F401
from .predictor import Predictor  # noqa: F401
