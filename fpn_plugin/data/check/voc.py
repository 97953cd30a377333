"""Check Pascal VOC XML annotations and their images (a VOCdevkit split or a flat folder)."""
import os
from collections import Counter
from typing import Optional, Sequence

from .report import Report
from .rules import check_box, check_image, progress

__all__ = ["check_voc", "check_vocdevkit"]


def check_voc(annotations_dir: str, images_dir: str, ids: Optional[Sequence[str]] = None,
              class_names: Optional[Sequence[str]] = None, check_images: bool = True,
              num_samples: int = 4, list_file: str = "") -> Report:
    """Check VOC XML annotations (VOCdevkit or a flat folder)."""
    from ..voc import _find_image, parse_voc_xml, voc_box_to_xyxy

    report = Report(f"VOC {annotations_dir} (images in {images_dir})")
    if ids is None:
        ids = sorted(f[:-4] for f in os.listdir(annotations_dir) if f.endswith(".xml"))
    seen = Counter(ids)
    for image_id, n in seen.items():
        if n > 1:
            report.add("duplicate id", list_file or annotations_dir, f"image id {image_id!r}",
                       f"listed {n} times")
    records = []
    for image_id in progress(seen, len(seen), "annotation files"):
        xml = os.path.join(annotations_dir, image_id + ".xml")
        if not os.path.isfile(xml):
            report.add("missing annotation", xml, f"image id {image_id!r}",
                       "the XML file does not exist")
            continue
        try:
            rec = parse_voc_xml(xml)
        except ValueError as e:
            report.add("malformed file", xml, "-", str(e))
            continue
        records.append((image_id, xml, rec))
    names = list(class_names) if class_names else sorted(
        {o["name"] for _, _, r in records for o in r["objects"]})
    report.id_mapping = [f"{n!r} -> {k}" for k, n in enumerate(names)]
    report.num_images = len(records)
    for image_id, xml, rec in progress(records, len(records), "images"):
        path = _find_image(images_dir, image_id, rec["filename"])
        check_image(report, path, xml, "image", rec["width"], rec["height"], check_images)
        boxes = []
        for i, obj in enumerate(rec["objects"]):
            where = f"object {i} ({obj['name']!r})"
            if obj["name"] not in names:
                report.add("unknown category", xml, where,
                           f"class {obj['name']!r} is not one of {names}")
                continue
            report.num_boxes += 1
            report.class_histogram[obj["name"]] += 1
            report.difficult += int(obj["difficult"])
            box = voc_box_to_xyxy(obj["bbox"])  # as training reads it
            check_box(report, xml, where, *box, rec["width"], rec["height"])
            boxes.append((obj["name"], tuple(box)))
        if len(report.samples) < num_samples:
            report.samples.append((path, boxes))
    return report


def check_vocdevkit(dirname: str, split: str, class_names: Optional[Sequence[str]] = None,
                    check_images: bool = True, num_samples: int = 4) -> Report:
    """Check one split of a VOCdevkit folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/``).

    ``split`` is a list of ``ImageSets/Main`` ("trainval") or the path of a ``.txt`` list.
    """
    from ..voc import image_set_path, read_image_set

    list_file = image_set_path(dirname, split)
    return check_voc(os.path.join(dirname, "Annotations"), os.path.join(dirname, "JPEGImages"),
                     read_image_set(list_file), class_names, check_images, num_samples, list_file)
