"""FiftyOne: ground truth and predictions in, FiftyOne's evaluation out."""
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image


@pytest.fixture(scope="module")
def fiftyone(tmp_path_factory):
    # FiftyOne's database for this test module only, started on first use, stopped at exit.
    settings = {
        "FIFTYONE_DATABASE_DIR": str(tmp_path_factory.mktemp("fodb")),
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    import fiftyone

    yield fiftyone
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def registered(tmp_path):
    name = f"fo_test_{tmp_path.name}"
    records = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(path)
        records.append({
            "file_name": str(path), "image_id": i, "height": 100, "width": 200,
            "annotations": [
                {"bbox": [20, 10, 60, 50], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
                {"bbox": [100, 40, 50, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
            ],
        })
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["cat", "dog"])
    yield name, records
    DatasetCatalog.remove(name)


def test_ground_truth_and_perfect_predictions_evaluate_to_map_1(fiftyone, registered, capsys):
    from fpn_plugin.inference.fiftyone_view import add_coco_results, detectron2_to_fiftyone, evaluate_detections

    name, records = registered
    dataset = detectron2_to_fiftyone(name, overwrite=True)
    assert len(dataset) == 2
    first = dataset.first()["ground_truth"].detections
    # XYXY [20,10,60,50] on a 200x100 image -> relative XYWH [0.1, 0.1, 0.2, 0.4].
    assert first[0].label == "cat"
    np.testing.assert_allclose(first[0].bounding_box, [0.1, 0.1, 0.2, 0.4])
    np.testing.assert_allclose(first[1].bounding_box, [0.5, 0.4, 0.25, 0.4])

    # Predictions equal to the ground truth, as predict.py writes them (COCO results, XYWH).
    results = []
    for r in records:
        file_name = os.path.basename(r["file_name"])
        results.append({"file_name": file_name, "category_name": "cat", "bbox": [20, 10, 40, 40], "score": 0.9})
        results.append({"file_name": file_name, "category_name": "dog", "bbox": [100, 40, 50, 40], "score": 0.8})
    sizes = {os.path.basename(r["file_name"]): (100, 200) for r in records}
    assert add_coco_results(dataset, results, sizes) == 2
    evaluation = evaluate_detections(dataset)
    assert evaluation.mAP() == pytest.approx(1.0)
    report = capsys.readouterr().out
    assert "FiftyOne mAP" in report and "cat" in report and "dog" in report
    assert dataset.sum("eval_tp") == 4 and dataset.sum("eval_fp") == 0


def test_an_existing_name_is_not_overwritten_silently(fiftyone, registered):
    from fpn_plugin.inference.fiftyone_view import detectron2_to_fiftyone

    name, _ = registered
    detectron2_to_fiftyone(name, fo_name="fpn_plugin_twice", overwrite=True)
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        detectron2_to_fiftyone(name, fo_name="fpn_plugin_twice")


def test_predict_py_fiftyone_run(fiftyone, tiny_detector, tmp_path, capsys):
    import json

    from fpn_plugin.inference.predict_cli import main

    from .conftest import CLASS_NAMES

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((80, 120, 3), 60 * i, np.uint8)).save(folder / f"im{i}.jpg")
    gt = {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "height": 80, "width": 120} for i in range(2)],
        "categories": [{"id": i, "name": n} for i, n in enumerate(CLASS_NAMES)],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    cfg, _ = tiny_detector
    (tmp_path / "tiny.yaml").write_text(cfg.dump())
    code = main(["--config-file", str(tmp_path / "tiny.yaml"), "--input", str(folder), "--output",
                 str(tmp_path / "out"), "--score-threshold", "0", "--no-vis", "--coco-gt",
                 str(tmp_path / "gt.json"), "--fiftyone", "fpn_plugin_predict_test"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "FiftyOne mAP" in printed and "FiftyOne dataset: fpn_plugin_predict_test (2 samples)" in printed
    dataset = fiftyone.load_dataset("fpn_plugin_predict_test")
    assert dataset.persistent  # still there for fo.load_dataset after predict.py has exited
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert dataset.count("predictions.detections") == len(predictions)
    assert dataset.count("ground_truth.detections") == 1
