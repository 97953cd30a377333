"""Datasets: builtin COCO/VOC, custom data declared in the config, the synthetic default.

Importing it (``import fpn_plugin`` does) registers ``voc_0712_trainval`` and the synthetic
``shapes_train`` / ``shapes_val`` next to detectron2's builtin COCO and VOC splits.
"""
from . import builtin  # noqa: F401  (registrations)
from .custom import register_custom_dataset, register_custom_datasets
from .paths import datasets_root, resolve_path  # noqa: F401  (resolve_path: importable, not listed)
from .register import (  # noqa: F401  (the two steps of setup_datasets: importable, not listed)
    register_datasets_from_config, setup_datasets, sync_num_classes,
)
from .synthetic import SHAPE_CLASSES, ShapesSpec, ensure_shapes, register_shapes

# What a user calls; the rest stays importable from its module.
__all__ = [
    "setup_datasets",
    "register_custom_dataset",
    "register_custom_datasets",
    "register_shapes",
    "ShapesSpec",
    "ensure_shapes",
    "SHAPE_CLASSES",
    "datasets_root",
]
