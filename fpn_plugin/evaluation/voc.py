"""Pascal VOC evaluation with both AP50 metrics, difficult objects ignored, and a per-class table.

detectron2's ``PascalVOCDetectionEvaluator`` reports one AP50: the VOC07 11-point one for
2007 data and the area one otherwise, needs the VOCdevkit folder, and rounds scores to three
decimals. VOC numbers in papers differ by several points between those two metrics, so this
evaluator reports both, for builtin and custom VOC data (any dataset whose dicts are VOC-like,
including a flat folder of images and XMLs).
"""
import itertools
import logging
import sys
from collections import defaultdict
from typing import Dict, List

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from tqdm import tqdm

from .explain import PredictionCounter, no_predictions_message
from .tables import markdown_table, write_results, write_table
from .voc_metric import ClassResult, evaluate_class_at, mean_ignoring_nan

__all__ = ["VOCDetectionEvaluator", "voc_ground_truth"]

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = [t / 100 for t in range(50, 100, 5)]


def voc_ground_truth(dataset_name: str) -> Dict[int, Dict[object, tuple]]:
    """The ground truth of a VOC-like dataset, per class and image.

    A dataset with ``dirname`` and ``split`` metadata (detectron2's builtin VOC, custom
    VOCdevkit data) is read from its XML files, as the devkit does, so the ``difficult`` flags
    are there even though detectron2's loader drops them. Any other dataset is read from its
    dataset dicts, whose annotations may carry ``difficult`` (0 when absent).

    Returns:
        class id -> image id -> (boxes (N, 4) XYXY_ABS float64, difficult (N,) bool); every
        image of the dataset is present for every class (possibly with no boxes).
    """
    meta = MetadataCatalog.get(dataset_name)
    if meta.get("dirname") and meta.get("split"):
        from fpn_plugin.data.voc import load_vocdevkit

        dicts = load_vocdevkit(meta.dirname, meta.split, meta.thing_classes)
    else:
        dicts = DatasetCatalog.get(dataset_name)
    num_classes = len(meta.thing_classes)
    per_class = {c: {} for c in range(num_classes)}
    for record in dicts:
        boxes = defaultdict(list)
        difficult = defaultdict(list)
        for ann in record.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue  # VOC has no crowd boxes; treat COCO crowds as not evaluated
            box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
            boxes[ann["category_id"]].append(box)
            difficult[ann["category_id"]].append(bool(ann.get("difficult", 0)))
        for c in range(num_classes):
            per_class[c][record["image_id"]] = (
                np.array(boxes[c], dtype=np.float64).reshape(-1, 4),
                np.array(difficult[c], dtype=bool),
            )
    return per_class


class VOCDetectionEvaluator(DatasetEvaluator):
    """Pascal VOC AP: VOC07 11-point and area (VOC2010+) AP50, with a per-class table.

    Results, under "bbox" (percentages, as detectron2's evaluators give them):

    - ``AP50_07``: mean over classes of the VOC2007 11-point AP at IoU 0.5.
    - ``AP50_area``: mean over classes of the area AP (VOC2010+) at IoU 0.5.
    - ``AP50``, ``AP75``, ``AP`` (mean over IoU 0.5:0.95): detectron2's convention, 11-point
      for a dataset whose metadata says ``year == 2007``, the area metric otherwise, so they
      match detectron2's ``PascalVOCDetectionEvaluator`` and the published VOC07 tables.
    - ``AP50_07-<class>`` and ``AP50_area-<class>`` per class.

    The mean skips classes without (non-difficult) ground truth, whose AP is undefined; the
    log says which. The per-class table is saved as ``voc_per_class_ap.{md,csv}`` in
    ``output_dir``.
    """

    def __init__(self, dataset_name: str, output_dir: str = None, distributed: bool = True):
        """
        Args:
            dataset_name: a registered dataset with ``thing_classes`` metadata.
            output_dir: where to save the per-class table (nothing saved if None).
            distributed: gather predictions from all workers before evaluating.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(meta.thing_classes)
        self._is_2007 = meta.get("year") == 2007
        self.reset()

    def reset(self):
        self._dets = defaultdict(list)  # class id -> [(image id, score, XYXY box)]
        self._counter = PredictionCounter()

    def process(self, inputs, outputs):
        self._counter.add(outputs)
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                continue
            instances = out["instances"].to("cpu")
            boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
            for box, score, cls in zip(
                boxes, instances.scores.tolist(), instances.pred_classes.tolist()
            ):
                self._dets[cls].append((inp["image_id"], score, box))

    def _gather(self):
        if not self._distributed:
            return self._dets, self._counter
        comm.synchronize()
        all_dets = comm.gather(self._dets, dst=0)
        counters = comm.gather(self._counter, dst=0)
        if not comm.is_main_process():
            return None, None
        dets = defaultdict(list)
        for part in all_dets:
            for cls, items in part.items():
                dets[cls].extend(items)
        return dets, PredictionCounter.merged(counters)

    def evaluate(self):
        dets, counter = self._gather()
        if dets is None:
            return {}
        logger.info("%s: %s", self._dataset_name, counter.summary(self._class_names))
        if counter.num_predictions == 0:
            logger.warning(no_predictions_message(self._dataset_name, counter.num_images))
        gt = voc_ground_truth(self._dataset_name)
        known_images = set(next(iter(gt.values()), {}).keys())
        unknown = {d[0] for d in itertools.chain(*dets.values())} - known_images
        if unknown:
            logger.warning(
                "%d image id(s) with predictions are not in %r and are ignored, e.g. %r.",
                len(unknown), self._dataset_name, sorted(map(str, unknown))[:3],
            )
        results = {"bbox": self.compute(gt, dets)}
        write_results(self._output_dir, results)
        return results

    def compute(self, gt, dets) -> Dict[str, float]:
        """The metrics from ground truth (see :func:`voc_ground_truth`) and detections per class."""
        # Seconds per class on a full VOC test set: a bar over the classes (stderr).
        classes = tqdm(range(len(self._class_names)), desc=f"VOC AP on {self._dataset_name}",
                       unit="class", file=sys.stderr)
        per_class = [evaluate_class_at(gt[c], dets.get(c, []), IOU_THRESHOLDS) for c in classes]
        per_thresh: Dict[float, List[ClassResult]] = {
            t: [r[k] for r in per_class] for k, t in enumerate(IOU_THRESHOLDS)
        }
        at50 = per_thresh[0.5]
        field = "ap_07" if self._is_2007 else "ap_area"

        def mean(results, attr):
            return 100 * mean_ignoring_nan([getattr(r, attr) for r in results])

        res = {
            "AP": float(np.mean([mean(per_thresh[t], field) for t in IOU_THRESHOLDS])),
            "AP50": mean(at50, field),
            "AP75": mean(per_thresh[0.75], field),
            "AP50_07": mean(at50, "ap_07"),
            "AP50_area": mean(at50, "ap_area"),
        }
        for name, r in zip(self._class_names, at50):
            res[f"AP50_07-{name}"] = 100 * r.ap_07
            res[f"AP50_area-{name}"] = 100 * r.ap_area
        self._report(at50, res)
        return res

    def _report(self, at50: List[ClassResult], res: Dict[str, float]) -> None:
        header = ["class", "AP50 (VOC07 11-point)", "AP50 (area, VOC2010+)", "GT", "difficult",
                  "detections", "TP"]
        rows = [
            [name, 100 * r.ap_07, 100 * r.ap_area, r.num_gt, r.num_difficult, r.num_dets, r.num_tp]
            for name, r in zip(self._class_names, at50)
        ]
        rows.append(["mean", res["AP50_07"], res["AP50_area"],
                     sum(r.num_gt for r in at50), sum(r.num_difficult for r in at50),
                     sum(r.num_dets for r in at50), sum(r.num_tp for r in at50)])
        no_gt = [n for n, r in zip(self._class_names, at50) if r.num_gt == 0]
        title = f"VOC AP50 per class on {self._dataset_name} (difficult objects ignored)"
        logger.info("%s:\n%s", title, markdown_table(header, rows))
        if no_gt:
            logger.warning(
                "%d class(es) have no non-difficult ground truth in %r, so their AP is "
                "undefined and left out of the mean: %s",
                len(no_gt), self._dataset_name, no_gt,
            )
        write_table(self._output_dir, "voc_per_class_ap", header, rows, title)
