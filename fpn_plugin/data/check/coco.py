"""Check a COCO detection JSON and its image folder, record by record."""
import json
import os
from typing import Dict

from detectron2.structures import BoxMode

from ..boxes import to_xyxy
from .report import Report
from .rules import check_box, check_image, progress

__all__ = ["check_coco"]


def _hint_xyxy(report: Report, json_file: str, annotations, images) -> None:
    """Boxes outside the image that would fit as [x0, y0, x1, y1]: COCO wants [x, y, w, h]."""
    outside = fits_as_xyxy = 0
    for ann in annotations:
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)):
            continue
        img = images.get(ann.get("image_id"))
        box = to_xyxy(ann.get("bbox"), BoxMode.XYXY_ABS)  # the values as given
        size = to_xyxy([img.get("width"), img.get("height"), 0, 0], BoxMode.XYXY_ABS) if img else None
        if box is None or not size or not size[0]:
            continue
        (x, y, w, h), (width, height) = box, size[:2]
        if x + w > width or y + h > height:
            outside += 1
            fits_as_xyxy += x < w <= width and y < h <= height
    if outside and fits_as_xyxy >= max(1, outside // 2):
        report.add("box format", json_file, "annotations",
                   f"{fits_as_xyxy} of the {outside} boxes outside their image fit inside it when "
                   "read as [x0, y0, x1, y1]: COCO's bbox is [x, y, width, height]; convert "
                   "with width = x1 - x0, height = y1 - y0")


def _categories(report: Report, json_file: str, cats) -> Dict[int, str]:
    """Category id -> name, reporting malformed and repeated ids; fills the id mapping."""
    if not cats:
        report.add("malformed file", json_file, "categories", "no categories")
    cat_name = {}
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            report.add("malformed record", json_file, f"categories[{i}]",
                       f"{c!r} is not an object with an integer 'id'")
            continue
        if c.get("id") in cat_name:
            report.add("duplicate id", json_file, f"categories[{i}]",
                       f"category id {c.get('id')} repeats")
        cat_name[c.get("id")] = c.get("name")
    for k, cid in enumerate(sorted(cat_name)):
        report.id_mapping.append(f"category id {cid} ({cat_name[cid]!r}) -> {k}")
    return cat_name


def _images(report: Report, json_file: str, records) -> Dict[object, dict]:
    """Image id -> image record, reporting malformed and repeated ids."""
    images = {}
    for i, img in enumerate(records):
        if not isinstance(img, dict) or not isinstance(img.get("id"), (int, str)):
            report.add("malformed record", json_file, f"images[{i}]",
                       f"{img!r} is not an object with an integer or string 'id'")
            continue
        iid = img.get("id")
        if iid in images:
            report.add("duplicate id", json_file, f"images[{i}]",
                       f"image id {iid} already used by {images[iid].get('file_name')!r}")
            continue
        images[iid] = img
    return images


def check_coco(json_file: str, image_root: str, check_images: bool = True,
               num_samples: int = 4) -> Report:
    """Check a COCO detection JSON and its image folder."""
    report = Report(f"COCO {json_file} (images in {image_root})")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        report.add("malformed file", json_file, "-", f"cannot read the JSON: {e}")
        return report
    if not isinstance(data, dict):
        report.add("malformed file", json_file, "-", f"the JSON is a {type(data).__name__}, not an "
                   "object with 'images', 'annotations' and 'categories'")
        return report
    cat_name = _categories(report, json_file, data.get("categories") or [])
    images = _images(report, json_file, data.get("images", []))
    report.num_images = len(images)
    for iid, img in progress(images.items(), len(images), "images"):
        path = os.path.join(image_root, img.get("file_name", ""))
        check_image(report, path, json_file, f"image id {iid}", img.get("width"),
                    img.get("height"), check_images)
    ann_ids = set()
    by_image: Dict[object, list] = {}
    annotations = data.get("annotations", [])
    for i, ann in progress(enumerate(annotations), len(annotations), "annotations"):
        if not isinstance(ann, dict):
            report.add("malformed record", json_file, f"annotations[{i}]", f"{ann!r} is not an object")
            continue
        try:
            where = f"annotations[{i}] (id {ann.get('id')})"
            if ann.get("id") in ann_ids:
                report.add("duplicate id", json_file, where, f"annotation id {ann.get('id')} repeats")
            elif ann.get("id") == 0:
                report.add("annotation id 0", json_file, where,
                           "pycocotools' COCOeval reads a match with annotation id 0 as no match, so a "
                           "correct detection of it counts as a false positive; fpn_plugin's evaluator "
                           "renumbers the ids, other tools will not: number annotations from 1")
            ann_ids.add(ann.get("id"))
            img = images.get(ann.get("image_id"))
            if img is None:
                report.add("unknown image", json_file, where,
                           f"image_id {ann.get('image_id')} is not in 'images'")
                continue
            if ann.get("category_id") not in cat_name:
                report.add("unknown category", json_file, where,
                           f"category_id {ann.get('category_id')} is not in 'categories' "
                           f"(ids: {sorted(cat_name)})")
                continue
            box = to_xyxy(ann.get("bbox"), BoxMode.XYWH_ABS)
            if box is None:
                report.add("malformed box", json_file, where,
                           f"bbox {ann.get('bbox')!r} is not 4 numbers [x, y, width, height]: "
                           "training drops it; fix or remove it")
                continue
            if ann.get("iscrowd", 0):
                report.crowd += 1  # crowd regions are not trained on as boxes: counted apart
                continue
            name = cat_name[ann["category_id"]]
            report.num_boxes += 1
            report.class_histogram[name] += 1
            check_box(report, json_file, where, *box, img.get("width"), img.get("height"))
            by_image.setdefault(ann["image_id"], []).append((name, tuple(box)))
        except (TypeError, ValueError, KeyError) as e:  # a record no rule foresaw: reported, not a crash
            report.add("malformed record", json_file, f"annotations[{i}]", f"{type(e).__name__}: {e}")
    _hint_xyxy(report, json_file, annotations, images)
    for iid in list(images)[:num_samples]:
        path = os.path.join(image_root, images[iid].get("file_name", ""))
        report.samples.append((path, by_image.get(iid, [])))
    return report
