"""COCO-style evaluation: detectron2's ``COCOEvaluator`` plus counts, explanations and tables.

On top of detectron2's evaluator this
- uses detectron2's fast ``COCOeval_opt`` when detectron2 has its compiled ops (it lives in
  ``detectron2._C``) and pycocotools' reference implementation otherwise: the same AP,
- counts predictions first and explains "no predictions" and NaN size buckets,
- renumbers ground-truth annotation ids that start at 0, which pycocotools mis-scores,
- judges the ground-truth boxes by the box rule training applies (``fpn_plugin.data.boxes``),
- saves the per-category AP table (AP, AP50 and the ground-truth count per category) as
  ``coco_per_category_ap.{md,csv}`` in the output folder.
"""
import logging
import os
from typing import Dict, List

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from fpn_plugin.compat import has_compiled_ops

from .explain import PredictionCounter, empty_bucket_messages, no_predictions_message, size_buckets
from .tables import markdown_table, write_results, write_table

__all__ = ["COCODetectionEvaluator"]

logger = logging.getLogger(__name__)

BOX_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def _renumber_annotation_id_zero(coco_api, dataset_name: str) -> None:
    """Give the ground-truth annotations ids from 1 when one of them has id 0.

    pycocotools' COCOeval records a detection's match as the matched annotation's id and reads
    0 as "no match", so a detection matching annotation 0 counts as a false positive (a perfect
    prediction of such a dataset scores below 100). The ids are internal to the ground truth,
    so renumbering them in memory changes nothing else; the file is left as it is.
    """
    anns = coco_api.dataset.get("annotations", [])
    if not any(a.get("id") == 0 for a in anns):
        return
    logger.warning(
        "%r has an annotation with id 0, which pycocotools' COCOeval takes for 'no match' (its "
        "detections would count as false positives); evaluating with the annotation ids "
        "renumbered from 1 (the file is not changed).", dataset_name,
    )
    for i, ann in enumerate(anns, start=1):
        ann["id"] = i
    coco_api.createIndex()


def _apply_box_rule_to_ground_truth(coco_api, dataset_name: str) -> None:
    """Judge the ground truth's boxes by the rule training applies (fpn_plugin.data.boxes):
    a box training drops is not asked for here either, and a clipped one is clipped. In
    memory only, like the renumbering above; areas (the size buckets) are kept."""
    from fpn_plugin.data.boxes import judge_box

    images = coco_api.imgs
    kept, dropped, clipped = [], 0, 0
    for ann in coco_api.dataset.get("annotations", []):
        x, y, w, h = ann["bbox"]
        img = images.get(ann["image_id"], {})
        verdict, box = judge_box((x, y, x + w, y + h), img.get("width"), img.get("height"))
        if verdict not in ("kept", "clipped"):
            dropped += 1
            continue
        if verdict == "clipped":
            clipped += 1
            ann["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
        kept.append(ann)
    if dropped or clipped:
        logger.warning(
            "%s: evaluating without the %d ground-truth boxes training drops and with %d clipped "
            "to their image, as the box rule does (the file is not changed).", dataset_name,
            dropped, clipped,
        )
        coco_api.dataset["annotations"] = kept
        coco_api.createIndex()


class COCODetectionEvaluator(COCOEvaluator):
    """COCO AP/AP50/AP75/APs/APm/APl for boxes, with a per-category table (percentages).

    Works for any registered detection dataset: datasets without a COCO JSON are converted
    by detectron2 (cached in ``output_dir``).
    """

    def __init__(
        self, dataset_name: str, output_dir: str = None, distributed: bool = True, use_fast_impl=None
    ):
        """
        Args:
            dataset_name: a registered dataset.
            output_dir: where predictions and the per-category table are saved.
            distributed: gather predictions from all workers before evaluating.
            use_fast_impl: detectron2's fast ``COCOeval_opt`` (True) or pycocotools' COCOeval
                (False), which give the same AP; None: the fast one when detectron2 has its
                compiled ops, where it lives.
        """
        if use_fast_impl is None:
            use_fast_impl = has_compiled_ops()
        elif use_fast_impl and not has_compiled_ops():
            raise ValueError(
                "use_fast_impl=True needs detectron2's compiled ops (COCOeval_opt is one), which "
                "this detectron2 has not: leave it None to use pycocotools' COCOeval."
            )
        json_file = MetadataCatalog.get(dataset_name).get("json_file")
        if json_file and not os.path.exists(json_file) and dataset_name in DatasetCatalog.list():
            # Data generated on first load (the synthetic shapes) has no JSON before that.
            DatasetCatalog.get(dataset_name)
        super().__init__(
            dataset_name,
            tasks=("bbox",),
            distributed=distributed,
            output_dir=output_dir,
            use_fast_impl=use_fast_impl,
        )
        self._per_category: List[list] = []
        if self._do_evaluation:
            _renumber_annotation_id_zero(self._coco_api, dataset_name)
            _apply_box_rule_to_ground_truth(self._coco_api, dataset_name)

    def reset(self):
        super().reset()
        self._counter = PredictionCounter()

    def process(self, inputs, outputs):
        self._counter.add(outputs)
        super().process(inputs, outputs)

    def _total_counter(self):
        if not self._distributed:
            return self._counter
        counters = comm.gather(self._counter, dst=0)
        if not comm.is_main_process():
            return None
        return PredictionCounter.merged(counters)

    def evaluate(self, img_ids=None):
        counter = self._total_counter()
        if counter is not None:
            names = self._metadata.get("thing_classes", [])
            logger.info("%s: %s", self._metadata.name, counter.summary(names))
            if counter.num_predictions == 0:
                logger.warning(no_predictions_message(self._metadata.name, counter.num_images))
        results = super().evaluate(img_ids)
        if counter is None:
            return results
        if not results:
            # detectron2 returns {} when no output had "instances": give the caller the keys.
            results = {"bbox": {m: float("nan") for m in BOX_METRICS}}
        if self._do_evaluation:
            areas = [a["area"] for a in self._coco_api.dataset.get("annotations", [])
                     if not a.get("iscrowd", 0)]
            for message in empty_bucket_messages(self._metadata.name, size_buckets(areas)):
                logger.warning(message)
        self._save_per_category()
        write_results(self._output_dir, results)
        return results

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None) -> Dict[str, float]:
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        self._per_category = []
        if coco_eval is None or not class_names:
            return results
        # precision: (IoU thresholds, recall points, categories, area ranges, max dets);
        # IoU index 0 is 0.5, area index 0 is "all", max dets -1 is 100.
        precision = coco_eval.eval["precision"]
        gt_per_cat = {}
        for ann in self._coco_api.dataset.get("annotations", []):
            if not ann.get("iscrowd", 0):
                gt_per_cat[ann["category_id"]] = gt_per_cat.get(ann["category_id"], 0) + 1
        cat_ids = coco_eval.params.catIds
        for k, name in enumerate(class_names):
            p_all = precision[:, :, k, 0, -1]
            p_50 = precision[0, :, k, 0, -1]
            self._per_category.append([
                name,
                float(np.mean(p_all[p_all > -1]) * 100) if (p_all > -1).any() else float("nan"),
                float(np.mean(p_50[p_50 > -1]) * 100) if (p_50 > -1).any() else float("nan"),
                gt_per_cat.get(cat_ids[k], 0),
            ])
            results[f"AP50-{name}"] = self._per_category[-1][2]
        return results

    def _save_per_category(self) -> None:
        if not self._per_category:
            return
        header = ["category", "AP", "AP50", "GT boxes"]
        rows = list(self._per_category)
        rows.append([
            "mean",
            float(np.nanmean([r[1] for r in rows])) if any(np.isfinite(r[1]) for r in rows)
            else float("nan"),
            float(np.nanmean([r[2] for r in rows])) if any(np.isfinite(r[2]) for r in rows)
            else float("nan"),
            sum(r[3] for r in rows),
        ])
        title = f"COCO box AP per category on {self._metadata.name}"
        logger.info("%s:\n%s", title, markdown_table(header, rows))
        write_table(self._output_dir, "coco_per_category_ap", header, rows, title)
