"""Evaluation chosen from the dataset, and results next to the published numbers."""
from .build import build_evaluator, evaluator_kind
from .coco import COCODetectionEvaluator
from .compare import ReferenceComparison, compare_with_reference
from .references import REFERENCES, get_reference
from .voc import VOCDetectionEvaluator

__all__ = [
    "build_evaluator",
    "evaluator_kind",
    "COCODetectionEvaluator",
    "VOCDetectionEvaluator",
    "ReferenceComparison",
    "compare_with_reference",
    "REFERENCES",
    "get_reference",
]
