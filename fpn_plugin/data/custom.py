"""Datasets declared in the config (``DATASETS.CUSTOM``), so one YAML describes an experiment.

Example::

    DATASETS:
      CUSTOM:
        masks_train: {FORMAT: coco, JSON: facemask/annotations/train.json, IMAGES: facemask/train}
        voc_sub_train: {FORMAT: vocdevkit, DIR: VOCdevkit/VOC2007, SPLIT: train, YEAR: 2007}
        parts_val: {FORMAT: voc_folder, DIR: parts/val}   # images and XMLs side by side
      TRAIN: ("masks_train",)

Keys of one dataset:

- ``FORMAT``: ``coco`` (a COCO JSON and an image folder), ``vocdevkit`` (``Annotations/``,
  ``JPEGImages/`` and ``ImageSets/Main/<SPLIT>.txt``; SPLIT may also be a ``.txt`` list file)
  or ``voc_folder`` (a flat folder of images and XMLs; ``ANNOTATIONS`` and ``IMAGES`` may name
  two folders instead of ``DIR``; ``SPLIT`` a text file of image ids, one per line, or a CSV
  with a ``filename`` column, relative to the config; without it, every XML of the folder).
- Any other key, or a key of another format (``SPLIT`` for ``coco``), is an error naming it.
- ``CLASSES``: the class names in contiguous-id order. Optional: by default they come from the
  data (COCO categories by id; for VOC, the sorted names found in all the XML files of the
  folder, not only of the split, so train and val agree).
- ``YEAR`` (VOC): 2007 makes AP50 the VOC07 11-point metric (both are always reported).

Relative paths are taken from the config file's folder, then from the datasets root. COCO
data is registered with detectron2's ``register_coco_instances`` (which maps any category ids,
e.g. 0..2, to contiguous ids); VOC data with :mod:`fpn_plugin.data.voc`, which keeps the
``difficult`` flags the VOC evaluator needs.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from .boxes import apply_box_rule
from .catalog import unregister
from .paths import datasets_root, resolve_path
from .voc import load_voc_folder, load_vocdevkit, voc_class_names

__all__ = ["register_custom_datasets", "register_custom_dataset"]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "vocdevkit", "voc_folder")
_REQUIRED = {"coco": ("JSON", "IMAGES"), "vocdevkit": ("DIR", "SPLIT"), "voc_folder": ()}
# Every key each format reads: any other key is an error, never silently ignored (a SPLIT that
# a format drops makes train and test the same images).
_ALLOWED = {
    "coco": ("FORMAT", "JSON", "IMAGES", "CLASSES"),
    "vocdevkit": ("FORMAT", "DIR", "SPLIT", "YEAR", "CLASSES"),
    "voc_folder": ("FORMAT", "DIR", "ANNOTATIONS", "IMAGES", "SPLIT", "YEAR", "CLASSES"),
}
# Column names of a split CSV that hold the image file name (as exported datasets name it).
_CSV_FILE_COLUMNS = ("filename", "file_name", "image", "image_id", "id")


def _repeated(values) -> List:
    seen, repeated = set(), []
    for v in values:
        if v in seen and v not in repeated:
            repeated.append(v)
        seen.add(v)
    return repeated


def check_coco_ids(json_file: str) -> str:
    """Refuse what detectron2's COCO reader would silently get wrong; returns ``json_file``.

    Duplicate image ids (it keeps one image and moves the other's boxes to it), duplicate
    annotation ids, annotations of unknown images (it drops them) and unknown category ids
    (a bare KeyError) are errors naming the file and the ids.
    """
    with open(json_file) as f:
        data = json.load(f)
    problems = [f"{key}[{i}] is not an object ({v!r:.60})" for key in ("images", "annotations", "categories")
                for i, v in enumerate(data.get(key, [])) if not isinstance(v, dict)]
    if problems:
        raise ValueError(f"{json_file}: " + "; ".join(problems[:5]) + ". Fix the file (python -m "
                         "fpn_plugin.data.check lists every problem).")
    images = [im.get("id") for im in data.get("images", [])]
    anns = data.get("annotations", [])
    dup_images = _repeated(images)
    if dup_images:
        problems.append(f"{len(dup_images)} image ids appear twice or more ({dup_images[:5]})")
    dup_anns = _repeated(a.get("id") for a in anns)
    if dup_anns:
        problems.append(f"{len(dup_anns)} annotation ids appear twice or more ({dup_anns[:5]})")
    known_images, known_cats = set(images), {c.get("id") for c in data.get("categories", [])}
    orphans = [a.get("id") for a in anns if a.get("image_id") not in known_images]
    if orphans:
        problems.append(f"{len(orphans)} annotations belong to no listed image (annotation {orphans[:5]})")
    unknown = [(a.get("id"), a.get("category_id")) for a in anns if a.get("category_id") not in known_cats]
    if unknown:
        problems.append(f"{len(unknown)} annotations have a category id that is not in 'categories' "
                        f"(annotation, category: {unknown[:5]})")
    if problems:
        raise ValueError(f"{json_file}: " + "; ".join(problems) + ". Fix the file (python -m "
                         "fpn_plugin.data.check lists every problem).")
    return json_file


def check_keys(where: str, given, allowed, other_uses: Optional[Dict[str, str]] = None) -> None:
    """Raise for a key of ``given`` not in ``allowed``, naming it, the closest match and all.

    Args:
        where: the config node, e.g. ``DATASETS.CUSTOM.masks_train``.
        given, allowed: key names.
        other_uses: {key: where else it means something}, for a clearer message.
    """
    import difflib

    for key in given:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]}?" if close else ""
        elsewhere = f" ({other_uses[key]})" if other_uses and key in other_uses else ""
        raise ValueError(
            f"{where}.{key} is not a key here{elsewhere}.{hint} The keys here are: "
            f"{', '.join(allowed)}."
        )


def read_split_file(path: str) -> List[str]:
    """The image ids a split file lists: a text file of ids (one per line, as VOC's
    ImageSets), or a CSV whose ``filename`` column names the images (ids are the file stems)."""
    import csv

    if path.lower().endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {c.strip().lower(): c for c in (rows[0].keys() if rows else [])}
        column = next((columns[c] for c in _CSV_FILE_COLUMNS if c in columns), None)
        if column is None:
            raise ValueError(
                f"The split CSV {path} has no file-name column: it needs one of "
                f"{list(_CSV_FILE_COLUMNS)} (its columns: {list(columns.values())})."
            )
        ids = [os.path.splitext(os.path.basename(r[column].strip()))[0] for r in rows if r[column].strip()]
    else:
        with open(path) as f:
            ids = [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
    if not ids:
        raise ValueError(f"The split file {path} lists no images.")
    return list(dict.fromkeys(ids))  # in order, each once


def coco_class_names(json_file: str) -> Tuple[List[str], Dict[int, int]]:
    """Category names and the id mapping, exactly as detectron2's ``load_coco_json`` makes them.

    Returns:
        (names ordered by category id, {dataset category id: contiguous id}).
    """
    with open(json_file) as f:
        data = json.load(f)
    cats = data.get("categories")
    if not cats:
        raise ValueError(f"{json_file} has no 'categories': a COCO detection JSON needs them.")
    cats = sorted(cats, key=lambda c: c["id"])
    return [c["name"] for c in cats], {c["id"]: i for i, c in enumerate(cats)}


def register_coco_following_rules(name: str, metadata: Dict, json_file: str, image_root: str) -> None:
    """``register_coco_instances``, loading with detectron2's reader after :func:`check_coco_ids`,
    then the box rule (:func:`fpn_plugin.data.boxes.apply_box_rule`).

    The ids are checked on a first read of the JSON (on COCO 2017 train, 448 MB, a few seconds).
    """
    register_coco_instances(name, metadata, json_file, image_root)
    DatasetCatalog.remove(name)
    checked = (lambda f: f) if "://" in json_file else check_coco_ids
    DatasetCatalog.register(name, lambda: apply_box_rule(
        load_coco_json(checked(json_file), image_root, name, extra_annotation_keys=["id"]), name))


def _xml_files(folder: str) -> List[str]:
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".xml")]


def register_custom_dataset(
    name: str, spec: Dict, config_file: Optional[str] = None, root: Optional[str] = None
) -> List[str]:
    """Register one dataset described like an entry of ``DATASETS.CUSTOM``.

    Args:
        name: the dataset name, used in DATASETS.TRAIN / TEST.
        spec: FORMAT and its keys (see the module docstring).
        config_file: the config file the spec comes from, for relative paths.
        root: the datasets root (default: :func:`fpn_plugin.data.paths.datasets_root`).

    Returns:
        The class names of the dataset.

    Raises:
        ValueError, FileNotFoundError: naming the dataset, the key and the fix.
    """
    root = root if root is not None else datasets_root()
    spec = {str(k).upper(): v for k, v in dict(spec).items()}
    fmt = str(spec.get("FORMAT", "")).lower()
    key = f"DATASETS.CUSTOM.{name}"
    if fmt not in FORMATS:
        raise ValueError(f"{key}.FORMAT is {spec.get('FORMAT')!r}; use one of {list(FORMATS)}.")
    other_uses = {k: "used by FORMAT " + " and ".join(f for f in FORMATS if k in _ALLOWED[f])
                  for f in FORMATS for k in _ALLOWED[f] if k not in _ALLOWED[fmt]}
    check_keys(key, spec, _ALLOWED[fmt], other_uses)
    missing = [k for k in _REQUIRED[fmt] if not spec.get(k)]
    if fmt == "voc_folder" and not spec.get("DIR") and not spec.get("ANNOTATIONS"):
        missing.append("DIR (or ANNOTATIONS and IMAGES)")
    if missing:
        raise ValueError(f"{key} (FORMAT {fmt}) needs {missing}.")
    if name in DatasetCatalog.list() and not MetadataCatalog.get(name).get("fpn_plugin_custom"):
        raise ValueError(
            f"{key}: {name!r} is already a registered dataset (a builtin one?); choose "
            "another name."
        )

    def path(k):
        return resolve_path(str(spec[k]), config_file, root, f"{key}.{k}")

    listed = [str(c) for c in spec.get("CLASSES") or []]
    unregister(name)
    if fmt == "coco":
        json_file, images = path("JSON"), path("IMAGES")
        classes, id_map = coco_class_names(json_file)
        if listed and listed != classes:
            raise ValueError(
                f"{key}.CLASSES is {listed} but {json_file} has the categories {classes} (in "
                "category-id order). Fix CLASSES, or remove it to take the names from the JSON."
            )
        register_coco_following_rules(name, {}, json_file, images)
        # Known before the data is loaded, so NUM_CLASSES can be checked and the evaluator
        # can map ids back (load_coco_json sets the same values again when it runs).
        MetadataCatalog.get(name).set(
            thing_classes=classes, thing_dataset_id_to_contiguous_id=id_map
        )
    else:
        if fmt == "vocdevkit":
            dirname, split = path("DIR"), str(spec["SPLIT"])
            if split.endswith(".txt"):  # a list file of one's own, e.g. a subset
                split = path("SPLIT")
            ann_dir = os.path.join(dirname, "Annotations")
            # Classes from every XML of the folder, not only this split: train and val agree.
            classes = listed or voc_class_names(_xml_files(ann_dir))
            DatasetCatalog.register(name, lambda: apply_box_rule(load_vocdevkit(dirname, split, classes), name))
            MetadataCatalog.get(name).set(dirname=dirname, split=split)
        else:
            ann_dir = path("ANNOTATIONS") if spec.get("ANNOTATIONS") else path("DIR")
            img_dir = path("IMAGES") if spec.get("IMAGES") else ann_dir
            classes = listed or voc_class_names(_xml_files(ann_dir))
            ids = read_split_file(path("SPLIT")) if spec.get("SPLIT") else None
            DatasetCatalog.register(name, lambda: apply_box_rule(load_voc_folder(ann_dir, img_dir, ids, classes), name))
        meta = MetadataCatalog.get(name)
        meta.set(thing_classes=list(classes), evaluator_type="pascal_voc")
        if spec.get("YEAR"):
            meta.set(year=int(spec["YEAR"]))
    MetadataCatalog.get(name).set(fpn_plugin_custom=True)
    logger.info("Registered %s (%s, %d classes: %s)", name, fmt, len(classes), classes)
    return list(classes)


def register_custom_datasets(cfg, config_file: Optional[str] = None) -> List[str]:
    """Register every dataset of ``cfg.DATASETS.CUSTOM``.

    Args:
        cfg: a config with fpn_plugin's keys.
        config_file: the YAML file ``cfg`` was loaded from, for relative paths.

    Returns:
        The names registered.
    """
    root = datasets_root(cfg)
    custom = cfg.DATASETS.get("CUSTOM", {}) or {}
    for name, spec in custom.items():
        register_custom_dataset(name, spec, config_file, root)
    return list(custom.keys())
