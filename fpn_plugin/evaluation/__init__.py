"""Evaluation chosen from the dataset, and results next to the published numbers."""
from .build import build_evaluator, evaluator_kind
from .coco import COCODetectionEvaluator
from .compare import ReferenceComparison, compare_with_reference
from .references import REFERENCES, get_reference
from .voc import VOCDetectionEvaluator

# The rest stays importable from here, as before; __all__ names what a user calls.
__all__ = [
    "build_evaluator", "COCODetectionEvaluator", "VOCDetectionEvaluator", "compare_with_reference",
    "get_reference",
]
