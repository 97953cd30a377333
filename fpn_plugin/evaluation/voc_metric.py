"""The Pascal VOC detection metric: matching, the VOC07 11-point AP and the area (VOC2010+) AP.

NumPy, with detectron2's ``voc_ap`` for both AP integrals: the evaluator
(:mod:`fpn_plugin.evaluation.voc`) feeds it boxes.

Boxes are in detectron2's continuous XYXY coordinates, in which a VOC box annotated with the
1-based inclusive pixels ``(xmin, ymin, xmax, ymax)`` is ``(xmin - 1, ymin - 1, xmax, ymax)``
(that is what detectron2's VOC loader produces). In those coordinates, the plain continuous
IoU equals the devkit's IoU with its ``+1`` pixel widths, so the matching is the devkit's.
"""
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
from detectron2.evaluation.pascal_voc_evaluation import voc_ap

__all__ = ["ClassResult", "evaluate_class", "evaluate_class_at"]


@dataclass
class ClassResult:
    """The VOC metric for one class at one IoU threshold.

    Attributes:
        ap_07: VOC2007 11-point interpolated AP, in [0, 1]; NaN without ground truth.
        ap_area: area under the interpolated precision/recall curve (VOC2010+), in [0, 1];
            NaN without ground truth.
        num_gt: ground-truth boxes that count (not difficult).
        num_difficult: difficult ground-truth boxes (ignored: neither TP nor FP).
        num_dets: detections of the class.
        num_tp: true positives among them.
    """

    ap_07: float
    ap_area: float
    num_gt: int
    num_difficult: int
    num_dets: int
    num_tp: int


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Continuous IoU of one XYXY box with each of ``boxes`` (N, 4)."""
    iw = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


def evaluate_class(
    gt: Dict[object, Tuple[np.ndarray, np.ndarray]],
    dets: Iterable[Tuple[object, float, Iterable[float]]],
    iou_thresh: float = 0.5,
) -> ClassResult:
    """Match one class's detections to its ground truth the devkit's way and compute both APs.

    Detections are taken by decreasing score (ties keep their given order). Each is matched
    to the ground-truth box of its image with the highest IoU; above ``iou_thresh`` it is a
    true positive if that box is not difficult and not yet matched, ignored if it is
    difficult, and a false positive if it was already matched. Otherwise it is a false
    positive.

    Args:
        gt: image id -> (boxes (N, 4) XYXY, difficult (N,) bool), for every image evaluated.
        dets: (image id, score, XYXY box) of this class.
        iou_thresh: IoU a match must exceed (strictly, as in the Python devkit).

    Returns:
        ClassResult.
    """
    return evaluate_class_at(gt, dets, [iou_thresh])[0]


def evaluate_class_at(
    gt: Dict[object, Tuple[np.ndarray, np.ndarray]],
    dets: Iterable[Tuple[object, float, Iterable[float]]],
    iou_thresholds: Sequence[float],
) -> List[ClassResult]:
    """:func:`evaluate_class` at several IoU thresholds, computing the IoUs once.

    Which ground-truth box a detection is compared with (its highest-IoU box) does not depend
    on the threshold; only the matching state does, so the IoUs are computed once.
    """
    dets = list(dets)
    num_gt = int(sum(int((~d).sum()) for _, d in gt.values()))
    num_difficult = int(sum(int(d.sum()) for _, d in gt.values()))
    scores = np.array([d[1] for d in dets], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    # Per detection, in rank order: its image, best ground-truth index and IoU (-1 if none).
    best_j = np.full(len(dets), -1, dtype=np.int64)
    best_iou = np.full(len(dets), -np.inf)
    images = []
    for rank, i in enumerate(order):
        image_id, _, box = dets[i]
        images.append(image_id)
        boxes = gt.get(image_id, (np.zeros((0, 4)),))[0]
        if len(boxes):
            ious = _iou(np.asarray(box, dtype=np.float64), boxes)
            best_j[rank] = int(np.argmax(ious))
            best_iou[rank] = ious[best_j[rank]]
    results = []
    for thresh in iou_thresholds:
        matched = {img: np.zeros(len(boxes), dtype=bool) for img, (boxes, _) in gt.items()}
        tp = np.zeros(len(dets))
        fp = np.zeros(len(dets))
        for rank, image_id in enumerate(images):
            j = best_j[rank]
            if j < 0 or not best_iou[rank] > thresh:
                fp[rank] = 1
            elif gt[image_id][1][j]:
                continue  # a detection of a difficult object neither helps nor hurts
            elif not matched[image_id][j]:
                tp[rank] = 1
                matched[image_id][j] = True
            else:
                fp[rank] = 1
        if num_gt == 0:
            nan = float("nan")
            results.append(ClassResult(nan, nan, 0, num_difficult, len(dets), 0))
            continue
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        rec = tp_cum / num_gt
        prec = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        # detectron2's voc_ap: the 11-point mean (use_07_metric) and the area under the
        # precision envelope (devkit's VOCap.m), the Python devkit's own code.
        ap_07, ap_area = float(voc_ap(rec, prec, True)), float(voc_ap(rec, prec, False))
        results.append(ClassResult(ap_07, ap_area, num_gt, num_difficult, len(dets), int(tp.sum())))
    return results


def mean_ignoring_nan(values: List[float]) -> float:
    """Mean over the finite values (classes without ground truth have NaN AP); NaN if none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
