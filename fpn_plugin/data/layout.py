"""Check the datasets root layout and say precisely what is missing.

``python datasets/check_layout.py`` (or ``python -m fpn_plugin.data.layout``) checks the
folders detectron2's builtin COCO and VOC datasets are read from (see ``datasets/README.md``).
Exit status 1 when a dataset asked for is incomplete.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

__all__ = ["LAYOUTS", "check_layout", "main"]

# dataset -> (files, folders with their expected number of images, image-set lists).
LAYOUTS: Dict[str, dict] = {
    "coco2017": {
        "files": ["coco/annotations/instances_train2017.json",
                  "coco/annotations/instances_val2017.json"],
        "image_dirs": {"coco/train2017": 118287, "coco/val2017": 5000},
        "fetch": "python datasets/fetch_coco.py coco2017",
    },
    "coco2014": {
        "files": ["coco/annotations/instances_train2014.json",
                  "coco/annotations/instances_val2014.json"],
        "image_dirs": {"coco/train2014": 82783, "coco/val2014": 40504},
        "fetch": "python datasets/fetch_coco.py coco2014",
    },
    "voc2007": {
        "lists": {"VOC2007": {"trainval": 5011, "test": 4952}},
        "fetch": "python datasets/fetch_voc.py voc2007",
    },
    "voc2012": {
        "lists": {"VOC2012": {"trainval": 11540}},
        "fetch": "python datasets/fetch_voc.py voc2012",
    },
}


def _count_images(folder: str) -> int:
    # Not fpn_plugin.image_files: datasets/ scripts load this module without the package.
    # The fetched datasets are JPEG (COCO, VOC) or PNG.
    with os.scandir(folder) as it:
        return sum(1 for e in it if e.name.lower().endswith((".jpg", ".jpeg", ".png")))


def check_layout(root: str, names: Sequence[str] = tuple(LAYOUTS)) -> Dict[str, List[str]]:
    """What is missing or incomplete for each dataset under ``root``.

    Returns:
        dataset -> list of problems (empty when the dataset is complete).
    """
    report = {}
    for name in names:
        if name not in LAYOUTS:
            raise ValueError(f"Unknown dataset {name!r}; choose from {sorted(LAYOUTS)}.")
        spec, problems = LAYOUTS[name], []
        for rel in spec.get("files", []):
            if not os.path.isfile(os.path.join(root, rel)):
                problems.append(f"missing file {os.path.join(root, rel)}")
        for rel, expected in spec.get("image_dirs", {}).items():
            folder = os.path.join(root, rel)
            if not os.path.isdir(folder):
                problems.append(f"missing folder {folder} (expected {expected} images)")
            else:
                found = _count_images(folder)
                if found < expected:
                    problems.append(f"incomplete folder {folder}: {found} of {expected} images")
        for rel, splits in spec.get("lists", {}).items():
            base = os.path.join(root, rel)
            for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
                if not os.path.isdir(os.path.join(base, sub)):
                    problems.append(f"missing folder {os.path.join(base, sub)}")
            for split, expected in splits.items():
                list_file = os.path.join(base, "ImageSets", "Main", split + ".txt")
                if not os.path.isfile(list_file):
                    problems.append(f"missing list {list_file} (expected {expected} image ids)")
                    continue
                with open(list_file) as f:
                    ids = [line.split()[0] for line in f if line.strip()]
                if len(ids) != expected:
                    problems.append(f"{list_file} lists {len(ids)} image ids, expected {expected}")
                ann_dir = os.path.join(base, "Annotations")
                img_dir = os.path.join(base, "JPEGImages")
                no_xml = [i for i in ids if not os.path.isfile(os.path.join(ann_dir, i + ".xml"))]
                no_jpg = [i for i in ids if not os.path.isfile(os.path.join(img_dir, i + ".jpg"))]
                for what, missing, folder in (("annotations", no_xml, "Annotations"),
                                              ("images", no_jpg, "JPEGImages")):
                    if missing:
                        problems.append(
                            f"{len(missing)} {what} of {split} missing in "
                            f"{os.path.join(base, folder)}, "
                            f"e.g. {', '.join(missing[:3])}"
                        )
        report[name] = problems
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Check the builtin datasets' folder layout.")
    p.add_argument("datasets", nargs="*", default=list(LAYOUTS),
                   help=f"any of {list(LAYOUTS)} (default: all)")
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
                   help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    args = p.parse_args(argv)
    report = check_layout(args.root, args.datasets)
    for name, problems in report.items():
        if not problems:
            print(f"{name}: complete")
            continue
        print(f"{name}: {len(problems)} problem(s) under {os.path.abspath(args.root)}")
        for problem in problems:
            print(f"  - {problem}")
        print(f"  fix: {LAYOUTS[name]['fetch']} --root {args.root}  (or see datasets/README.md)")
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
