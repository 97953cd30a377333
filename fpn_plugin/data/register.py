"""Register what a config needs, and make NUM_CLASSES follow the data.

Call :func:`setup_datasets` after loading a config and before building the model::

    cfg = get_cfg(); add_fpn_plugin_config(cfg); cfg.merge_from_file(path)
    setup_datasets(cfg, config_file=path)
"""
import logging
import os
from typing import Dict, List, Optional

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from .builtin import register_builtin_under
from .custom import register_custom_datasets
from .paths import datasets_root
from .synthetic import ShapesSpec, register_shapes

__all__ = ["setup_datasets", "register_datasets_from_config", "sync_num_classes",
           "dataset_classes", "config_class_names"]

logger = logging.getLogger(__name__)


def register_datasets_from_config(cfg, config_file: Optional[str] = None) -> None:
    """Register the config's datasets: DATASETS.ROOT, DATASETS.SHAPES and DATASETS.CUSTOM."""
    root = datasets_root(cfg)
    if cfg.DATASETS.get("ROOT"):
        register_builtin_under(root)
    shapes = cfg.DATASETS.get("SHAPES")
    if shapes is not None:
        cache = shapes.CACHE_DIR or os.path.join(root, "shapes")
        register_shapes(cache, ShapesSpec.from_config(cfg))
    register_custom_datasets(cfg, config_file)


def dataset_classes(name: str) -> List[str]:
    """The class names of a registered dataset (from its metadata, else by loading it)."""
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset {name!r} is not registered. Declare it under DATASETS.CUSTOM, or use a "
            f"builtin one (e.g. coco_2017_train, voc_2007_trainval, shapes_train)."
        )
    meta = MetadataCatalog.get(name)
    if not meta.get("thing_classes"):
        DatasetCatalog.get(name)  # COCO loaders set thing_classes when they run
    classes = meta.get("thing_classes")
    if not classes:
        raise ValueError(
            f"Dataset {name!r} has no thing_classes metadata: its classes are unknown."
        )
    return list(classes)


def _one_set_of_classes(classes: Dict[str, List[str]]) -> str:
    """Raise unless every dataset of ``classes`` (name -> class names) has the same classes;
    returns the first name."""
    names = list(classes)
    for name in names[1:]:
        if classes[name] != classes[names[0]]:
            raise ValueError(
                f"Datasets {names[0]!r} and {name!r} have different classes: {classes[names[0]]} "
                f"vs {classes[name]}. A model has one set of classes: list the same CLASSES for "
                "both in DATASETS.CUSTOM (their order gives the ids)."
            )
    return names[0]


def config_class_names(cfg) -> Optional[List[str]]:
    """The class names that the config's datasets declare, or None when none declares any.

    The one lookup for naming a model's classes (the trainer writes them into checkpoints, the
    Predictor falls back on them). DATASETS.TRAIN is read before DATASETS.TEST: a model's
    classes are those it is trained on, and a test set can only name the same ones. Only the
    metadata is read, nothing is loaded: a dataset that is not registered here (a config from
    another machine) or has no ``thing_classes`` is passed over.

    Raises:
        ValueError: two of the datasets declare different classes (as :func:`sync_num_classes`).
    """
    registered = set(MetadataCatalog.list())
    classes = {}
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        names = MetadataCatalog.get(name).get("thing_classes", None) if name in registered else None
        if names:
            classes[name] = list(names)
    return classes[_one_set_of_classes(classes)] if classes else None


def sync_num_classes(cfg) -> int:
    """Make ``MODEL.ROI_HEADS.NUM_CLASSES`` (and RetinaNet's) follow the data.

    Every dataset of DATASETS.TRAIN and DATASETS.TEST must have the same classes. If
    NUM_CLASSES is detectron2's default (80, "not set"), it is set to the data's number;
    any other value that differs from the data is an error that gives both numbers.

    Returns:
        The number of classes.
    """
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        return cfg.MODEL.ROI_HEADS.NUM_CLASSES
    classes = {name: dataset_classes(name) for name in names}
    first = _one_set_of_classes(classes)
    num = len(classes[first])
    default = get_cfg()
    heads = [("MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS, default.MODEL.ROI_HEADS)]
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        heads = [("MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET, default.MODEL.RETINANET)]
    for key, node, default_node in heads:
        if node.NUM_CLASSES == num:
            continue
        if node.NUM_CLASSES != default_node.NUM_CLASSES:
            raise ValueError(
                f"{key} is {node.NUM_CLASSES} but the data ({', '.join(names)}) has {num} "
                f"classes: {classes[first]}. Set {key}: {num}, or remove it from the config "
                "to follow the data."
            )
        was_frozen = cfg.is_frozen()
        cfg.defrost()
        node.NUM_CLASSES = num
        if was_frozen:
            cfg.freeze()
        logger.info("%s set to %d, the number of classes of %s.", key, num, first)
    return num


def setup_datasets(cfg, config_file: Optional[str] = None) -> int:
    """Register the config's datasets and make NUM_CLASSES follow them.

    Args:
        cfg: a config with fpn_plugin's keys (``add_fpn_plugin_config``), merged.
        config_file: the YAML it was loaded from, for relative dataset paths.

    Returns:
        The number of classes.
    """
    register_datasets_from_config(cfg, config_file)
    num = sync_num_classes(cfg)
    warn_on_shared_images(cfg)
    return num


def _image_files(name: str) -> set:
    return {os.path.realpath(d["file_name"]) for d in DatasetCatalog.get(name)}


def warn_on_shared_images(cfg) -> int:
    """Warn when a training and a test dataset of the config share images; return the count.

    Only datasets declared in ``DATASETS.CUSTOM`` are compared (they are loaded for it): the
    builtin COCO and VOC splits are disjoint, and user-made splits are where a model ends up
    scored on its own training images.
    """
    custom = set((cfg.DATASETS.get("CUSTOM", {}) or {}).keys())
    train = [n for n in cfg.DATASETS.TRAIN if n in custom]
    test = [n for n in cfg.DATASETS.TEST if n in custom]
    if not train or not test:
        return 0
    train_files = set().union(*(_image_files(n) for n in train))
    shared = 0
    for name in test:
        both = train_files & _image_files(name)
        if both:
            shared += len(both)
            logger.warning(
                "%d images of the test dataset %s are also in the training data (%s), e.g. %s: "
                "its results would score the model on images it was trained on. Give the "
                "datasets disjoint splits (SPLIT in DATASETS.CUSTOM).",
                len(both), name, ", ".join(train), sorted(both)[0],
            )
    return shared
