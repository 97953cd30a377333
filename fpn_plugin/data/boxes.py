"""The one rule for ground-truth boxes, applied when a dataset is loaded.

- A box that is not four numbers (a missing value, a string) is dropped.
- A box with a NaN or infinite coordinate is dropped.
- A box partly outside its image is clipped to the image.
- A box with no area (zero or negative width or height, also after clipping, e.g. wholly
  outside the image) is dropped.
- Crowd boxes (``iscrowd: 1``) are kept and counted: detectron2's training mapper ignores
  them, as COCO's evaluation does.

What was dropped or clipped is reported once per dataset, with the first few annotations of
each kind ("dropped 3 of 4021 boxes: 2 zero-area (annotation 17, 42), 1 NaN (annotation 8)").
"""
import logging
import math
import os
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from detectron2.structures import BoxMode

__all__ = ["apply_box_rule", "judge_box", "to_xyxy", "BoxReport", "NOT_NUMBERS"]

logger = logging.getLogger(__name__)

_SHOWN = 3  # annotations named per kind


class BoxReport:
    """What :func:`apply_box_rule` did to a dataset's boxes."""

    def __init__(self, name: str):
        self.name = name
        self.total = 0
        self.crowd = 0
        self.dropped: Dict[str, List[str]] = defaultdict(list)  # reason -> annotation names
        self.clipped: List[str] = []

    @property
    def num_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def _named(self, names: List[str]) -> str:
        more = f", ... {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        return ", ".join(names[:_SHOWN]) + more

    def message(self) -> str:
        """One line for the log, also when every box was kept as it was."""
        parts = []
        if self.dropped:
            kinds = ", ".join(f"{len(v)} {k} ({self._named(v)})" for k, v in sorted(self.dropped.items()))
            parts.append(f"dropped {self.num_dropped} of {self.total} boxes: {kinds}")
        if self.clipped:
            parts.append(f"clipped {len(self.clipped)} boxes to their image ({self._named(self.clipped)})")
        if self.crowd:
            parts.append(f"{self.crowd} crowd boxes kept (ignored in training, as by detectron2)")
        if not parts:
            return f"{self.name}: all {self.total} boxes kept as they are (box rule: none dropped or clipped)"
        return f"{self.name}: " + "; ".join(parts)


def _annotation_name(record: dict, k: int, ann: dict) -> str:
    if "id" in ann:
        return f"annotation {ann['id']}"
    return f"{os.path.basename(str(record.get('file_name', record.get('image_id'))))} object {k}"


NOT_NUMBERS = "not 4 numbers"


def _floats(values) -> Optional[List[float]]:
    if isinstance(values, (str, bytes)):
        return None
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):  # None, a string that is no number, not a sequence
        return None
    return floats if len(floats) == 4 else None


def to_xyxy(bbox, mode) -> Optional[List[float]]:
    """``bbox`` (in ``mode``) as four floats in XYXY_ABS, or None when it is not four numbers."""
    values = _floats(bbox)
    if values is None or mode == BoxMode.XYXY_ABS:
        return values
    if mode == BoxMode.XYWH_ABS:  # by hand: BoxMode.convert builds a tensor per box
        x, y, w, h = values
        return [x, y, x + w, y + h]
    return [float(v) for v in BoxMode.convert(values, mode, BoxMode.XYXY_ABS)]


def judge_box(box, width=None, height=None) -> Tuple[str, List[float]]:
    """The rule for one XYXY_ABS box: ("kept" | "clipped" | a reason it is dropped, the box).

    The reasons are "not 4 numbers", "NaN/inf", "zero or negative size" and "outside the
    image"; the dataset check reports the same verdicts that loading applies.
    """
    floats = _floats(box)
    if floats is None:
        return NOT_NUMBERS, box
    box = floats
    if not all(math.isfinite(v) for v in box):
        return "NaN/inf", box
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return "zero or negative size", box
    size = _floats([width, height, 0, 0]) if width and height else None
    if size is not None:
        width, height = size[:2]
        clipped = [min(max(x0, 0.0), width), min(max(y0, 0.0), height),
                   min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            return "outside the image", box
        if clipped != box:
            return "clipped", clipped
    return "kept", box


def apply_box_rule(records: List[dict], name: str) -> List[dict]:
    """Apply the box rule to detectron2 dataset dicts in place; log what it did once.

    Boxes come out as XYXY_ABS. Returns ``records``.
    """
    report = BoxReport(name)
    for record in records:
        if "annotations" not in record:
            continue
        width, height = record.get("width"), record.get("height")
        kept = []
        for k, ann in enumerate(record["annotations"]):
            report.total += 1
            label = _annotation_name(record, k, ann)
            xyxy = to_xyxy(ann.get("bbox"), ann.get("bbox_mode", BoxMode.XYXY_ABS))
            verdict, box = judge_box(xyxy if xyxy is not None else ann.get("bbox"), width, height)
            if verdict == "clipped":
                report.clipped.append(label)
            elif verdict != "kept":
                report.dropped[verdict].append(label)
                continue
            if ann.get("iscrowd", 0):
                report.crowd += 1
            kept.append(dict(ann, bbox=box, bbox_mode=BoxMode.XYXY_ABS))
        record["annotations"] = kept
    (logger.warning if report.dropped or report.clipped else logger.info)(report.message())
    return records
