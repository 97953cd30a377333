"""Builtin datasets: detectron2's COCO and VOC registrations, VOC 07+12, and the shapes default.

detectron2 itself registers, under ``$DETECTRON2_DATASETS`` (default ``./datasets``), the
COCO 2014/2017 splits (``coco_2017_train``, ``coco_2017_val``, ``coco_2014_minival``, ...) and
the VOC 2007/2012 ones (``voc_2007_trainval``, ``voc_2007_test``, ``voc_2012_trainval``, ...):
those are reused as they are. This module adds

- ``voc_0712_trainval``: VOC2007 trainval + VOC2012 trainval, the usual "07+12" training set
  (the same as ``DATASETS.TRAIN: ("voc_2007_trainval", "voc_2012_trainval")``);
- ``shapes_train`` / ``shapes_val``: the synthetic default (:mod:`fpn_plugin.data.synthetic`),
  cached in ``<datasets root>/shapes``;
- :func:`register_builtin_under`, which re-registers the COCO and VOC detection splits under
  another root (``DATASETS.ROOT`` in a config).

At import the COCO and VOC detection splits are re-registered under the default root with the
same files and metadata, loading through the checks every dataset gets: COCO ids
(:func:`fpn_plugin.data.custom.check_coco_ids`), the box rule (:mod:`fpn_plugin.data.boxes`),
and VOC through :func:`fpn_plugin.data.voc.load_vocdevkit` (detectron2's reader fails on a
one-line ImageSets list and makes a zero-area box a one-pixel one; both keep difficult objects).

The expected folder layout is in ``datasets/README.md``.
"""
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import builtin as d2_builtin
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASS_NAMES
from detectron2.data.datasets.pascal_voc import register_pascal_voc

from .boxes import apply_box_rule
from .catalog import unregister
from .custom import register_coco_following_rules
from .paths import datasets_root
from .voc import load_vocdevkit
from .synthetic import ShapesSpec, register_shapes

__all__ = ["register_builtin_under", "register_voc_0712", "register_default_shapes"]

logger = logging.getLogger(__name__)

# detectron2's VOC splits, as in detectron2.data.datasets.builtin.register_all_pascal_voc.
VOC_SPLITS = [
    ("voc_2007_trainval", "VOC2007", "trainval"),
    ("voc_2007_train", "VOC2007", "train"),
    ("voc_2007_val", "VOC2007", "val"),
    ("voc_2007_test", "VOC2007", "test"),
    ("voc_2012_trainval", "VOC2012", "trainval"),
    ("voc_2012_train", "VOC2012", "train"),
    ("voc_2012_val", "VOC2012", "val"),
]


def register_voc_0712(root: str, name: str = "voc_0712_trainval") -> None:
    """Register VOC2007 trainval + VOC2012 trainval under one name."""
    unregister(name)
    dirs = [os.path.join(root, "VOC2007"), os.path.join(root, "VOC2012")]
    DatasetCatalog.register(name, lambda: apply_box_rule(
        [d for dirname in dirs for d in load_vocdevkit(dirname, "trainval", VOC_CLASS_NAMES)], name))
    # No "dirname": two folders. Evaluate on voc_2007_test, as the papers do.
    MetadataCatalog.get(name).set(thing_classes=list(VOC_CLASS_NAMES), evaluator_type="pascal_voc")


def register_builtin_under(root: str) -> None:
    """Re-register detectron2's COCO and VOC detection splits (and 07+12) under ``root``.

    detectron2 registers them once, at import, under ``$DETECTRON2_DATASETS``; a config's
    ``DATASETS.ROOT`` moves them. Keypoint, panoptic, LVIS and Cityscapes splits stay where
    detectron2 put them (set ``DETECTRON2_DATASETS`` to move those).
    """
    for name, (image_root, json_file) in d2_builtin._PREDEFINED_SPLITS_COCO["coco"].items():
        unregister(name)
        register_coco_following_rules(
            name,
            _get_builtin_metadata("coco"),
            os.path.join(root, json_file) if "://" not in json_file else json_file,
            os.path.join(root, image_root),
        )
    for name, dirname, split in VOC_SPLITS:
        unregister(name)
        year = 2007 if "2007" in name else 2012
        register_pascal_voc(name, os.path.join(root, dirname), split, year)
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda d=os.path.join(root, dirname), s=split, n=name: apply_box_rule(
            load_vocdevkit(d, s, VOC_CLASS_NAMES), n))
        MetadataCatalog.get(name).evaluator_type = "pascal_voc"
    register_voc_0712(root)
    logger.debug("Registered the COCO and VOC detection splits under %s", root)


def register_default_shapes(root: str = None, spec: ShapesSpec = ShapesSpec()) -> None:
    """Register ``shapes_train`` / ``shapes_val`` with cache folder ``<root>/shapes``."""
    register_shapes(os.path.join(root or datasets_root(), "shapes"), spec)


# At import (``import fpn_plugin``): the detection splits, 07+12 and the shapes default, under
# the default root.
register_builtin_under(datasets_root())
register_default_shapes()
