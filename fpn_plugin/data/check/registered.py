"""Check a dataset registered in detectron2's catalog: from its files when it has COCO or VOC
metadata, else from its dataset dicts."""
import os
from collections import Counter

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .coco import check_coco
from .report import Report
from .rules import check_box, check_image, progress
from .voc import check_vocdevkit

__all__ = ["check_dataset"]


def _check_dicts(name: str, classes, check_images: bool, num_samples: int) -> Report:
    """Check the dataset dicts a registered dataset loads to."""
    report = Report(f"registered dataset {name!r}")
    report.id_mapping = [f"{n!r} -> {k}" for k, n in enumerate(classes)]
    ids = Counter()
    dicts = DatasetCatalog.get(name)
    for i, d in enumerate(progress(dicts, len(dicts), "records")):
        where = f"dataset dict [{i}] (image_id {d.get('image_id')})"
        ids[d.get("image_id")] += 1
        if ids[d.get("image_id")] == 2:
            report.add("duplicate id", d.get("file_name", ""), where, "image_id repeats")
        report.num_images += 1
        check_image(report, d.get("file_name", ""), d.get("file_name", ""), where,
                    d.get("width"), d.get("height"), check_images)
        boxes = []
        for k, a in enumerate(d.get("annotations", [])):
            w = f"{where} annotation {k}"
            if not 0 <= a["category_id"] < len(classes):
                report.add("unknown category", d.get("file_name", ""), w,
                           f"category_id {a['category_id']} is not in 0..{len(classes) - 1}")
                continue
            box = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            report.num_boxes += 1
            report.class_histogram[classes[a["category_id"]]] += 1
            check_box(report, d.get("file_name", ""), w, *box, d.get("width"), d.get("height"))
            boxes.append((classes[a["category_id"]], box))
        if len(report.samples) < num_samples:
            report.samples.append((d.get("file_name", ""), boxes))
    return report


def check_dataset(name: str, check_images: bool = True, num_samples: int = 4) -> Report:
    """Check a registered dataset, from its files when it has COCO or VOC metadata."""
    meta = MetadataCatalog.get(name)
    if meta.get("json_file") and meta.get("image_root"):
        if not os.path.isfile(meta.json_file):
            DatasetCatalog.get(name)  # generated on first load (the synthetic shapes)
        report = check_coco(meta.json_file, meta.image_root, check_images, num_samples)
    elif meta.get("dirname") and meta.get("split"):
        report = check_vocdevkit(meta.dirname, meta.split, meta.get("thing_classes"),
                                 check_images, num_samples)
    else:
        report = _check_dicts(name, meta.get("thing_classes") or [], check_images, num_samples)
    report.name = f"{name}: {report.name}"
    return report
