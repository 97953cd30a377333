"""Draw the images a check sampled with their ground truth, through the preview's drawer."""
import math
import os
from typing import List

from .report import Report
from .rules import image_problem

__all__ = ["draw_ground_truth"]

# One colour per class (RGB), by the class's place among the sorted class names.
_PALETTE = [(255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49),
            (72, 249, 10), (146, 204, 23), (61, 219, 134), (0, 188, 211), (0, 128, 255)]


def draw_ground_truth(report: Report, output_dir: str) -> List[str]:
    """Draw the sampled images' boxes and class names; returns the files written.

    Each image is written as ``<stem>_gt.png``. Images that cannot be read and boxes with a
    NaN or infinite coordinate are left out: the report lists them as problems already.
    """
    from detectron2.data.catalog import Metadata
    from detectron2.structures import BoxMode

    from ..preview import draw_record

    os.makedirs(output_dir, exist_ok=True)
    names = sorted(report.class_histogram)
    metadata = Metadata(thing_classes=names,
                        thing_colors=[_PALETTE[k % len(_PALETTE)] for k in range(len(names))])
    written = []
    for path, boxes in report.samples:
        if image_problem(path)[0] != "size":
            continue
        annotations = [{"bbox": list(box), "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": names.index(name)}
                       for name, box in boxes if all(math.isfinite(v) for v in box)]
        out = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + "_gt.png")
        try:
            written.append(draw_record({"file_name": path, "annotations": annotations}, metadata, out))
        except OSError:  # a truncated file passes PIL's verify() and fails when decoded
            continue
    return written
