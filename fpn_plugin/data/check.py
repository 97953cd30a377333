"""Check a detection dataset before training on it: ``python -m fpn_plugin.data.check``.

Prints image and box counts, the class histogram, the id mapping training will use, and every
problem found, each with its file and index: missing or unreadable image, image size differing
from the annotation, box outside the image or of zero area, unknown category, duplicate ids,
annotations of unknown images, malformed files, annotation id 0 (which pycocotools
mis-scores), [x0, y0, x1, y1] boxes in a COCO file. Draws the ground truth on a few images.
Exits with status 1 when there are problems, so it can gate a pipeline.

Examples::

    python -m fpn_plugin.data.check --coco annotations/train.json images/train
    python -m fpn_plugin.data.check --vocdevkit datasets/VOC2007 trainval
    python -m fpn_plugin.data.check --voc-folder my_data/ --classes cat,dog
    python -m fpn_plugin.data.check --config-file configs/my.yaml    # its TRAIN and TEST sets
    python -m fpn_plugin.data.check coco_2017_val shapes_train         # registered datasets
"""
import argparse
import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from detectron2.structures import BoxMode

from .boxes import judge_box, to_xyxy

__all__ = [
    "Problem", "Report", "check_coco", "check_voc", "check_dataset", "draw_ground_truth", "main",
]


@dataclass
class Problem:
    """One problem: its kind, the file it is in and where in that file."""

    kind: str  # e.g. "missing image", "box outside image"
    file: str
    where: str  # e.g. "annotations[12] (id 13)" or "object 2"
    message: str

    def __str__(self):
        return f"[{self.kind}] {self.file}: {self.where}: {self.message}"


@dataclass
class Report:
    """What a check found."""

    name: str
    num_images: int = 0
    num_boxes: int = 0
    class_histogram: Counter = field(default_factory=Counter)  # class name -> boxes
    difficult: int = 0
    crowd: int = 0  # crowd boxes, not counted in num_boxes (training ignores them)
    id_mapping: List[str] = field(default_factory=list)  # lines "dataset id -> contiguous id"
    problems: List[Problem] = field(default_factory=list)
    # For drawing: (image path, [(class name, XYXY box)])
    samples: List[tuple] = field(default_factory=list)

    def add(self, kind, file, where, message):
        self.problems.append(Problem(kind, file, where, message))

    def kinds(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def format(self, max_problems: int = 200) -> str:
        lines = [f"== {self.name}", f"images: {self.num_images}   boxes: {self.num_boxes}"
                 + (f"   (difficult: {self.difficult})" if self.difficult else "")
                 + (f"   crowd boxes (not trained on): {self.crowd}" if self.crowd else "")]
        lines.append("class histogram (boxes per class):")
        width = max([len(n) for n in self.class_histogram] + [5])
        for name, count in sorted(self.class_histogram.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<{width}} {count}")
        lines.append("id mapping used for training:")
        lines += [f"  {m}" for m in self.id_mapping]
        if not self.problems:
            lines.append("problems: none")
        else:
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(self.kinds().items()))
            lines.append(f"problems: {len(self.problems)} ({summary})")
            lines += [f"  {p}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more")
        return "\n".join(lines)


def _progress(items, total: int, what: str):
    """tqdm on stderr for large datasets (a few hundred items check in a blink)."""
    from tqdm import tqdm

    return tqdm(items, total=total, desc=f"checking {what}", unit="", file=sys.stderr,
                disable=total < 1000, leave=False)


def _image_problem(path: str) -> Optional[tuple]:
    """None if the image opens, else (kind, message); also returns its size when readable."""
    from PIL import Image

    if not os.path.isfile(path):
        return ("missing image", "the file does not exist")
    try:
        with Image.open(path) as im:
            im.verify()  # reads the file's structure without decoding all pixels
        with Image.open(path) as im:
            # As detectron2's reader sees it: EXIF orientations 5-8 turn the image by 90 degrees.
            width, height = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            return ("size", (width, height))
    except Exception as e:  # PIL raises many types for broken files
        return ("unreadable image", f"cannot be read as an image ({type(e).__name__}: {e})")


def _check_image(report: Report, path: str, file: str, where: str, width, height, check_images):
    if not check_images:
        return
    result = _image_problem(path)
    if result[0] != "size":
        report.add(result[0], file, where, f"{path}: {result[1]}")
    elif width and height and to_xyxy([*result[1], 0, 0], BoxMode.XYXY_ABS) != to_xyxy(
            [width, height, 0, 0], BoxMode.XYXY_ABS):
        report.add("image size mismatch", file, where,
                   f"{path} is {result[1][0]}x{result[1][1]} but the annotation says "
                   f"{width}x{height}")


def _check_box(report, file, where, x0, y0, x1, y1, width, height):
    """Report what the box rule (fpn_plugin.data.boxes), which loading applies, does to a box
    given in XYXY_ABS; returns False when it drops it."""
    verdict, _ = judge_box((x0, y0, x1, y1), width, height)
    box = f"box (x0={x0}, y0={y0}, x1={x1}, y1={y1})"
    if verdict == "NaN/inf":
        report.add("non-finite box", file, where,
                   f"{box} has a NaN or infinite coordinate: training drops it; fix or remove it")
    elif verdict == "zero or negative size":
        report.add("zero-area box", file, where, f"{box} has no area: training drops it; fix or remove it")
    elif verdict in ("outside the image", "clipped"):
        what = "drops it" if verdict == "outside the image" else "clips it to the image"
        report.add("box outside image", file, where,
                   f"{box} is not inside the {width}x{height} image: training {what}; fix it")
    return verdict not in ("NaN/inf", "zero or negative size", "outside the image")

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
    cats = data.get("categories") or []
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
    images = {}
    for i, img in enumerate(data.get("images", [])):
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
    report.num_images = len(images)
    for iid, img in _progress(images.items(), len(images), "images"):
        path = os.path.join(image_root, img.get("file_name", ""))
        _check_image(report, path, json_file, f"image id {iid}", img.get("width"),
                     img.get("height"), check_images)
    ann_ids = set()
    by_image: Dict[object, list] = {}
    for i, ann in enumerate(data.get("annotations", [])):
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
            _check_box(report, json_file, where, *box, img.get("width"), img.get("height"))
            by_image.setdefault(ann["image_id"], []).append((name, tuple(box)))
        except (TypeError, ValueError, KeyError) as e:  # a record no rule foresaw: reported, not a crash
            report.add("malformed record", json_file, f"annotations[{i}]", f"{type(e).__name__}: {e}")
    _hint_xyxy(report, json_file, data.get("annotations", []), images)
    for iid in list(images)[:num_samples]:
        path = os.path.join(image_root, images[iid].get("file_name", ""))
        report.samples.append((path, by_image.get(iid, [])))
    return report


def check_voc(annotations_dir: str, images_dir: str, ids: Optional[Sequence[str]] = None,
              class_names: Optional[Sequence[str]] = None, check_images: bool = True,
              num_samples: int = 4, list_file: str = "") -> Report:
    """Check VOC XML annotations (VOCdevkit or a flat folder)."""
    from .voc import _find_image, parse_voc_xml, voc_box_to_xyxy

    report = Report(f"VOC {annotations_dir} (images in {images_dir})")
    if ids is None:
        ids = sorted(f[:-4] for f in os.listdir(annotations_dir) if f.endswith(".xml"))
    seen = Counter(ids)
    for k, (image_id, n) in enumerate(_progress(seen.items(), len(seen), "annotation files")):
        if n > 1:
            report.add("duplicate id", list_file or annotations_dir, f"image id {image_id!r}",
                       f"listed {n} times")
    records = []
    for image_id in seen:
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
    for image_id, xml, rec in records:
        path = _find_image(images_dir, image_id, rec["filename"])
        _check_image(report, path, xml, "image", rec["width"], rec["height"], check_images)
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
            _check_box(report, xml, where, *box, rec["width"], rec["height"])
            boxes.append((obj["name"], tuple(box)))
        if len(report.samples) < num_samples:
            report.samples.append((path, boxes))
    return report


def check_dataset(name: str, check_images: bool = True, num_samples: int = 4) -> Report:
    """Check a registered dataset, from its files when it has COCO or VOC metadata."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    meta = MetadataCatalog.get(name)
    if meta.get("json_file") and meta.get("image_root"):
        if not os.path.isfile(meta.json_file):
            DatasetCatalog.get(name)  # generated on first load (the synthetic shapes)
        report = check_coco(meta.json_file, meta.image_root, check_images, num_samples)
    elif meta.get("dirname") and meta.get("split"):
        from .voc import read_image_set

        from .voc import image_set_path

        list_file = image_set_path(meta.dirname, meta.split)
        report = check_voc(os.path.join(meta.dirname, "Annotations"),
                           os.path.join(meta.dirname, "JPEGImages"), read_image_set(list_file),
                           meta.get("thing_classes"), check_images, num_samples, list_file)
    else:
        # Any other registered dataset: check its dataset dicts.
        classes = meta.get("thing_classes") or []
        report = Report(f"registered dataset {name!r}")
        report.id_mapping = [f"{n!r} -> {k}" for k, n in enumerate(classes)]
        ids = Counter()
        dicts = DatasetCatalog.get(name)
        for i, d in enumerate(_progress(dicts, len(dicts), "records")):
            where = f"dataset dict [{i}] (image_id {d.get('image_id')})"
            ids[d.get("image_id")] += 1
            if ids[d.get("image_id")] == 2:
                report.add("duplicate id", d.get("file_name", ""), where, "image_id repeats")
            report.num_images += 1
            _check_image(report, d.get("file_name", ""), d.get("file_name", ""), where,
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
                _check_box(report, d.get("file_name", ""), w, *box, d.get("width"), d.get("height"))
                boxes.append((classes[a["category_id"]], box))
            if len(report.samples) < num_samples:
                report.samples.append((d.get("file_name", ""), boxes))
    report.name = f"{name}: {report.name}"
    return report


def draw_ground_truth(report: Report, output_dir: str) -> List[str]:
    """Draw the sampled images' boxes and class names; returns the files written."""
    import cv2
    import numpy as np

    os.makedirs(output_dir, exist_ok=True)
    palette = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
               (10, 249, 72), (23, 204, 146), (134, 219, 61), (211, 188, 0), (255, 128, 0)]
    names = sorted(report.class_histogram)
    written = []
    for path, boxes in report.samples:
        image = cv2.imread(path) if os.path.isfile(path) else None
        if image is None:
            continue  # reported as a problem already
        for name, (x0, y0, x1, y1) in boxes:
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                continue  # reported as a problem already; nothing to draw
            colour = palette[names.index(name) % len(palette)] if name in names else (255, 255, 255)
            p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1)
            cv2.rectangle(image, p0, p1, colour, 2)
            cv2.putText(image, name, (p0[0], max(p0[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        colour, 1, cv2.LINE_AA)
        out = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + "_gt.png")
        cv2.imwrite(out, np.ascontiguousarray(image))
        written.append(out)
    return written


def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m fpn_plugin.data.check",
        description="Check a detection dataset: counts, class histogram, id mapping, problems, "
        "drawings.",
    )
    p.add_argument("datasets", nargs="*", help="registered dataset names")
    p.add_argument("--config-file", help="check the TRAIN and TEST datasets of this config")
    p.add_argument("--coco", nargs=2, metavar=("JSON", "IMAGE_DIR"),
                   help="a COCO JSON and its images")
    p.add_argument("--vocdevkit", nargs=2, metavar=("DIR", "SPLIT"),
                   help="a VOCdevkit folder and split")
    p.add_argument("--voc-folder", metavar="DIR", help="a flat folder of images and XMLs")
    p.add_argument("--classes", default="",
                   help="comma-separated class names (VOC), else from the data")
    p.add_argument("--draw", type=int, default=4,
                   help="images to draw the ground truth on (default 4)")
    p.add_argument("--output", default="dataset_check", help="folder for the drawings")
    p.add_argument("--no-images", action="store_true", help="do not open the images (faster)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the check; returns 0 when no problem was found, 1 when problems were found, and 2
    when the check could not run (bad arguments, a config or file it cannot read)."""
    args = _parse_args(argv)
    try:
        return _run(args)
    except Exception as e:  # the check itself failed: say so, apart from "problems found"
        print(f"python -m fpn_plugin.data.check could not run: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import fpn_plugin  # noqa: F401  (compat fixes and builtin registrations)

    check_images = not args.no_images
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    reports = []
    if args.coco:
        reports.append(check_coco(args.coco[0], args.coco[1], check_images, args.draw))
    if args.vocdevkit:
        from .voc import read_image_set

        dirname, split = args.vocdevkit
        list_file = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
        reports.append(check_voc(
            os.path.join(dirname, "Annotations"), os.path.join(dirname, "JPEGImages"),
            read_image_set(list_file), classes, check_images, args.draw, list_file,
        ))
    if args.voc_folder:
        reports.append(check_voc(args.voc_folder, args.voc_folder, None, classes, check_images,
                                 args.draw))
    names = list(args.datasets)
    if args.config_file:
        from ..config import load_config
        from .register import register_datasets_from_config

        cfg = load_config(args.config_file)
        register_datasets_from_config(cfg, args.config_file)
        names += [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) if n not in names]
    for name in names:
        reports.append(check_dataset(name, check_images, args.draw))
    if not reports:
        print("Nothing to check: give dataset names, --config-file, --coco, --vocdevkit or "
              "--voc-folder.", file=sys.stderr)
        return 2
    failed = False
    for k, report in enumerate(reports):
        print(report.format())
        if args.draw:
            out = os.path.join(args.output, str(k) if len(reports) > 1 else "")
            written = draw_ground_truth(report, out)
            print(f"ground truth drawn on {len(written)} image(s) in {os.path.abspath(out)}")
        failed |= bool(report.problems)
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
