"""COCO evaluation: perfect predictions give 100, known-shifted boxes the known value."""
import json
import logging
import math
import uuid

import pytest
import torch

import fpn_plugin  # noqa: F401  (before detectron2's submodules)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from fpn_plugin.evaluation import COCODetectionEvaluator, build_evaluator

SIZE = 40  # every box is 40x40: area 1600, COCO's "medium" range


def _dataset():
    dicts = []
    for i in range(3):
        anns = [
            {"bbox": [10 + 50 * k, 20 + 10 * i, SIZE, SIZE], "bbox_mode": BoxMode.XYWH_ABS,
             "category_id": k % 2, "iscrowd": 0}
            for k in range(3)
        ]
        dicts.append({"file_name": f"img{i}.jpg", "image_id": i, "height": 120, "width": 200,
                      "annotations": anns})
    return dicts


@pytest.fixture()
def dataset():
    name = f"test_coco_eval_{uuid.uuid4().hex[:6]}"
    DatasetCatalog.register(name, _dataset)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"], evaluator_type="coco")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(name, out_dir, shift):
    ev = COCODetectionEvaluator(name, output_dir=str(out_dir), distributed=False)
    ev.reset()
    for d in _dataset():
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        boxes = torch.tensor(boxes) + torch.tensor([shift, 0.0, shift, 0.0])
        inst = Instances((d["height"], d["width"]), pred_boxes=Boxes(boxes),
                         scores=torch.full((len(boxes),), 0.9),
                         pred_classes=torch.tensor([a["category_id"] for a in d["annotations"]]))
        ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return ev.evaluate()["bbox"]


def test_perfect_predictions_give_100(dataset, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="fpn_plugin"):
        res = _evaluate(dataset, tmp_path, 0.0)
    for key in ("AP", "AP50", "AP75", "APm", "AP-a", "AP-b", "AP50-a"):
        assert res[key] == pytest.approx(100.0), key
    # No small and no large boxes: those APs are NaN, and the log says why.
    assert math.isnan(res["APs"]) and math.isnan(res["APl"])
    assert "APs is NaN" in caplog.text and "no small objects" in caplog.text
    assert "APl is NaN" in caplog.text
    rows = (tmp_path / "coco_per_category_ap.csv").read_text().splitlines()
    assert rows[0] == "category,AP,AP50,GT boxes"
    assert rows[1].startswith("a,100.0,100.0,6") and rows[2].startswith("b,100.0,100.0,3")
    # The numbers are also saved as strict JSON, NaN as null, for scripts and the notebook.
    saved = json.loads((tmp_path / "results.json").read_text())["bbox"]
    assert saved["AP50"] == pytest.approx(100.0) and saved["APs"] is None


def test_shifted_boxes_give_the_known_value(dataset, tmp_path):
    # A 4-pixel shift of a 40-pixel box: IoU = 36*40 / (44*40) = 0.818. The match holds at the
    # IoU thresholds 0.50..0.80 (7 of COCO's 10) with precision 1, and fails at 0.85..0.95.
    res = _evaluate(dataset, tmp_path, 4.0)
    assert res["AP"] == pytest.approx(70.0)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == pytest.approx(100.0)
    # A 12-pixel shift: IoU = 28/52 = 0.538 matches only at 0.50.
    res = _evaluate(dataset, tmp_path / "b", 12.0)
    assert res["AP"] == pytest.approx(10.0)
    assert res["AP75"] == pytest.approx(0.0)


def test_no_predictions_are_explained(dataset, tmp_path, caplog):
    ev = build_evaluator(None, dataset, str(tmp_path))
    assert isinstance(ev, COCODetectionEvaluator)
    ev._distributed = False
    ev.reset()
    empty = Instances((120, 200), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                      pred_classes=torch.zeros(0, dtype=torch.long))
    ev.process([{"image_id": i} for i in range(3)], [{"instances": empty}] * 3)
    with caplog.at_level(logging.INFO, logger="fpn_plugin"):
        res = ev.evaluate()["bbox"]
    assert math.isnan(res["AP"])
    assert "0 predictions on 3 images (3 images without any)" in caplog.text
    assert "made no predictions on the 3 images" in caplog.text


def test_ground_truth_boxes_follow_the_box_rule_training_applies(tmp_path, caplog):
    import json
    import uuid

    from detectron2.data.datasets import register_coco_instances

    from fpn_plugin.evaluation import COCODetectionEvaluator

    gt = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 30, 0, 10], "area": 0, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [90, 70, 30, 30], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    name = "rule_eval_" + uuid.uuid4().hex[:6]
    register_coco_instances(name, {}, str(path), str(tmp_path))
    with caplog.at_level("WARNING", logger="fpn_plugin.evaluation.coco"):
        ev = COCODetectionEvaluator(name, output_dir=str(tmp_path / "out"), distributed=False)
    anns = ev._coco_api.dataset["annotations"]
    assert [a["id"] for a in anns] == [1, 3]  # the zero-area box is not asked for
    assert anns[1]["bbox"] == [90.0, 70.0, 10.0, 10.0]  # clipped to the 100x80 image
    assert "without the 1 ground-truth boxes training drops and with 1 clipped" in caplog.text
