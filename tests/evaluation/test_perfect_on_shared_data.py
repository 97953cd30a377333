"""Perfect predictions on the shared real datasets score 100: ids and coordinates round-trip.

facemask_coco has category ids 0..2 and image ids from 0; the VOC subset has difficult boxes
and 1-based pixel coordinates. Predictions made from the loaded ground truth must get every
box back exactly through the evaluators' conversions.
"""
import uuid
from pathlib import Path

import pytest
import torch

import fpn_plugin  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from fpn_plugin.data import register_custom_dataset
from fpn_plugin.evaluation import COCODetectionEvaluator, VOCDetectionEvaluator

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
VOC = SHARED_DATA / "voc2007_subset" / "VOCdevkit" / "VOC2007"
FACEMASK = SHARED_DATA / "facemask_coco"


def _perfect(evaluator, dicts, skip_difficult=False):
    evaluator.reset()
    for d in dicts:
        anns = [a for a in d["annotations"] if not (skip_difficult and a.get("difficult"))]
        boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        inst = Instances((d["height"], d["width"]),
                         pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)),
                         scores=torch.linspace(0.99, 0.5, len(anns)) if anns else torch.zeros(0),
                         pred_classes=torch.tensor([a["category_id"] for a in anns], dtype=torch.long))
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_facemask_perfect_predictions_give_100(tmp_path):
    if not (FACEMASK / "annotations" / "custom_val.json").is_file():
        pytest.skip(f"the shared facemask COCO dataset is not at {FACEMASK} (only on the dev machine)")
    name = f"masks_val_{uuid.uuid4().hex[:6]}"
    register_custom_dataset(name, {"FORMAT": "coco", "JSON": str(FACEMASK / "annotations" / "custom_val.json"),
                                   "IMAGES": str(FACEMASK / "val2017")})
    try:
        dicts = DatasetCatalog.get(name)
        assert min(d["image_id"] for d in dicts) == 0
        res = _perfect(COCODetectionEvaluator(name, str(tmp_path), distributed=False), dicts)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    for key in ("AP", "AP50", "AP75", "AP-with_mask", "AP-without_mask", "AP-mask_weared_incorrect"):
        assert res[key] == pytest.approx(100.0), key


def test_voc_subset_perfect_predictions_give_100():
    if not (VOC / "Annotations").is_dir():
        pytest.skip(f"the shared VOC2007 subset is not at {VOC} (only on the dev machine)")
    name = f"vocsub_val_{uuid.uuid4().hex[:6]}"
    register_custom_dataset(name, {"FORMAT": "vocdevkit", "DIR": str(VOC), "SPLIT": "val", "YEAR": 2007})
    try:
        dicts = DatasetCatalog.get(name)
        # Predicting only the non-difficult boxes is perfect: difficult ones are not required.
        res = _perfect(VOCDetectionEvaluator(name, distributed=False), dicts, skip_difficult=True)
        with_difficult = _perfect(VOCDetectionEvaluator(name, distributed=False), dicts)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert res["AP50_07"] == pytest.approx(100.0) and res["AP50_area"] == pytest.approx(100.0)
    assert res["AP"] == pytest.approx(100.0)  # exact boxes match at every IoU threshold
    # Detections of difficult objects are ignored, not counted as false positives.
    assert with_difficult["AP50_area"] == pytest.approx(100.0)


@pytest.mark.parametrize("dataset", ["voc2007_subset val", "facemask_coco val"])
def test_ground_truth_proposals_recall_100_on_the_shared_data(tmp_path, dataset):
    from fpn_plugin.inference.proposals import proposal_recall
    from inference.conftest import ground_truth_proposals_cfg

    if dataset.startswith("voc"):
        if not (VOC / "Annotations").is_dir():
            pytest.skip(f"the shared VOC2007 subset is not at {VOC} (only on the dev machine)")
        spec = {"FORMAT": "vocdevkit", "DIR": str(VOC), "SPLIT": "val", "YEAR": 2007}
    else:
        if not (FACEMASK / "annotations" / "custom_val.json").is_file():
            pytest.skip(f"the shared facemask COCO dataset is not at {FACEMASK} (only on the dev machine)")
        spec = {"FORMAT": "coco", "JSON": str(FACEMASK / "annotations" / "custom_val.json"),
                "IMAGES": str(FACEMASK / "val2017")}
    name = f"proposals_{uuid.uuid4().hex[:6]}"
    register_custom_dataset(name, spec)
    try:
        dicts = DatasetCatalog.get(name)[:12]
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda: dicts)
        cfg = ground_truth_proposals_cfg(name, dicts, tmp_path / "proposals.pkl")
        recall = proposal_recall(cfg, name, output_dir=str(tmp_path / "eval"))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert isinstance(dicts[0]["image_id"], str) == dataset.startswith("voc")
    assert recall["AR@100"] == pytest.approx(100.0) and recall["AR@1000"] == pytest.approx(100.0)
