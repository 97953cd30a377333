"""From training to prediction, every route sees the same detections (the seam tests).

A model is trained briefly with ``train_net.py`` on a dataset declared in ``DATASETS.CUSTOM``,
then the validation images are predicted by ``predict.py``, by ``Predictor``, by detectron2's
own ``DefaultPredictor`` and by ``train_net.py --eval-only`` (its COCO evaluator writes its
detections): all four must give the same boxes, scores and classes, and predict.py's
``predictions.json`` scored with pycocotools must give the evaluator's AP. Once on generated
shapes (always runs), once on the shared facemask photos (skipped without ../shared/data).
"""
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import fpn_plugin  # noqa: F401
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor

from fpn_plugin.config import add_fpn_plugin_config
from fpn_plugin.data import setup_datasets
from fpn_plugin.data.synthetic import ShapesSpec, generate_shapes
from fpn_plugin.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]
FACEMASK = ROOT.parent / "shared" / "data" / "facemask_coco"
# Boxes within 1e-3 px and scores within 1e-5: the same forward in fp32, batch 1, on the CPU.
BOX_ATOL, SCORE_ATOL = 1e-3, 1e-5


def _write_config(tmp_path, train_json, train_images, val_json, val_images) -> Path:
    config = tmp_path / "seam.yaml"
    config.write_text(f"""\
_BASE_: "{ROOT / 'configs' / 'shapes_r18_fpn.yaml'}"
MODEL:
  DEVICE: cpu
DATASETS:
  CUSTOM:
    seam_train: {{FORMAT: coco, JSON: "{train_json}", IMAGES: "{train_images}"}}
    seam_val: {{FORMAT: coco, JSON: "{val_json}", IMAGES: "{val_images}"}}
  TRAIN: ("seam_train",)
  TEST: ("seam_val",)
SOLVER:
  MAX_ITER: 30
  STEPS: (20,)
  WARMUP_ITERS: 10
  BASE_LR: 0.01
  CHECKPOINT_PERIOD: 1000
DATALOADER:
  NUM_WORKERS: 0
TEST:
  EVAL_PERIOD: 0
  PLOTS:
    ENABLED: False
OUTPUT_DIR: "{tmp_path / 'train'}"
""")
    return config


def _run(*command, cwd=ROOT):
    run = subprocess.run([sys.executable, *map(str, command)], cwd=cwd, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _load_cfg(config: Path, weights: Path):
    cfg = get_cfg()
    add_fpn_plugin_config(cfg)
    cfg.merge_from_file(str(config))
    setup_datasets(cfg, str(config))
    cfg.MODEL.WEIGHTS = str(weights)
    return cfg


def _by_image(entries, key="image_id"):
    out = {}
    for e in entries:
        out.setdefault(e[key], []).append((e["category_id"], np.array(e["bbox"], float), float(e["score"])))
    return {k: sorted(v, key=lambda d: -d[2]) for k, v in out.items()}


def _instances_to_entries(image_id, instances, category_ids):
    boxes = instances.pred_boxes.tensor.numpy().astype(float)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1) if len(boxes) else boxes
    return [{"image_id": image_id, "category_id": category_ids[int(c)], "bbox": list(b), "score": float(s)}
            for b, s, c in zip(xywh, instances.scores.numpy(), instances.pred_classes.numpy())]


def _assert_same(route, reference, other, box_atol=BOX_ATOL, score_atol=SCORE_ATOL):
    assert sorted(reference) == sorted(other), f"{route}: other images"
    compared = 0
    for image_id, expected in reference.items():
        got = other[image_id]
        assert len(got) == len(expected), f"{route}: image {image_id}: {len(got)} vs {len(expected)} detections"
        for (c1, b1, s1), (c2, b2, s2) in zip(expected, got):
            assert c1 == c2, f"{route}: image {image_id}: class {c2} vs {c1}"
            np.testing.assert_allclose(b2, b1, rtol=0, atol=box_atol, err_msg=f"{route}: image {image_id}")
            assert abs(s1 - s2) <= score_atol, f"{route}: image {image_id}: score {s2} vs {s1}"
            compared += 1
    return compared


def _pycocotools_ap(gt_json: Path, predictions: list) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(predictions), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0] * 100)


def _seam(tmp_path, train_json, train_images, val_json, val_images):
    config = _write_config(tmp_path, train_json, train_images, val_json, val_images)
    _run(ROOT / "train_net.py", "--config-file", config)
    weights = tmp_path / "train" / "model_final.pth"
    assert weights.is_file()

    # 1. train_net.py --eval-only: the evaluator's AP and the detections it scored.
    _run(ROOT / "train_net.py", "--eval-only", "--config-file", config, "MODEL.WEIGHTS", weights,
         "OUTPUT_DIR", tmp_path / "eval")
    evaluated = json.loads((tmp_path / "eval" / "inference" / "seam_val" / "coco_instances_results.json").read_text())
    results = json.loads((tmp_path / "eval" / "inference" / "seam_val" / "results.json").read_text())
    evaluator_ap = results["bbox"]["AP"]

    gt = json.loads(Path(val_json).read_text())
    images = sorted(gt["images"], key=lambda im: im["id"])
    paths = [Path(val_images) / im["file_name"] for im in images]
    category_ids = [c["id"] for c in sorted(gt["categories"], key=lambda c: c["id"])]

    # 2. predict.py, everything the model keeps (the model's own SCORE_THRESH_TEST applies).
    folder = tmp_path / "val_images"
    folder.mkdir()
    for p in paths:
        os.symlink(p, folder / p.name)
    _run(ROOT / "predict.py", "--config-file", config, "--weights", weights, "--input", folder,
         "--output", tmp_path / "predict", "--no-vis", "--score-threshold", "0", "--coco-gt", val_json,
         "--device", "cpu")
    predicted = json.loads((tmp_path / "predict" / "predictions.json").read_text())

    # 3. Predictor and 4. DefaultPredictor, in this process, from the same config and weights.
    cfg = _load_cfg(config, weights)
    predictor = Predictor(cfg)
    assert predictor.class_names == [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    torch.manual_seed(0)
    default = DefaultPredictor(cfg)
    ours, theirs = [], []
    for image, path in zip(images, paths):
        bgr = cv2.imread(str(path))
        ours += _instances_to_entries(image["id"], predictor.predict([str(path)])[0]["instances"], category_ids)
        theirs += _instances_to_entries(image["id"], default(bgr)["instances"].to("cpu"), category_ids)

    reference = _by_image(evaluated)
    assert sum(len(v) for v in reference.values()) > 0, "the briefly trained model detects nothing"
    counts = {
        "predict.py": _assert_same("predict.py", reference, _by_image(predicted)),
        "Predictor": _assert_same("Predictor", reference, _by_image(ours)),
        "DefaultPredictor": _assert_same("DefaultPredictor", reference, _by_image(theirs)),
    }
    predict_ap = _pycocotools_ap(Path(val_json), predicted)
    assert predict_ap == pytest.approx(evaluator_ap, abs=1e-6)
    return counts, evaluator_ap, predict_ap


@pytest.mark.slow
def test_every_route_predicts_the_same_on_generated_data(tmp_path):
    paths = generate_shapes(str(tmp_path / "shapes"), ShapesSpec(seed=3, num_train=16, num_val=6))
    root = tmp_path / "shapes"
    counts, evaluator_ap, predict_ap = _seam(tmp_path, paths["train"], root, paths["val"], root)
    print(f"seam (shapes): detections compared {counts}; AP evaluator {evaluator_ap:.4f}, "
          f"predict.py + pycocotools {predict_ap:.4f}")


@pytest.mark.slow
def test_every_route_predicts_the_same_on_the_shared_facemask_photos(tmp_path):
    val_json = FACEMASK / "annotations" / "custom_val.json"
    if not val_json.is_file():
        pytest.skip(f"the shared facemask COCO dataset is not at {FACEMASK} (only on the dev machine)")
    # The first 12 validation photos, as a COCO JSON of their own (ids 0.. as in the file).
    gt = json.loads(val_json.read_text())
    keep = {im["id"] for im in sorted(gt["images"], key=lambda im: im["id"])[:12]}
    subset = dict(gt, images=[im for im in gt["images"] if im["id"] in keep],
                  annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    small_val = tmp_path / "val12.json"
    small_val.write_text(json.dumps(subset))
    counts, evaluator_ap, predict_ap = _seam(
        tmp_path, FACEMASK / "annotations" / "custom_train.json", FACEMASK / "train2017",
        small_val, FACEMASK / "val2017",
    )
    print(f"seam (facemask): detections compared {counts}; AP evaluator {evaluator_ap:.4f}, "
          f"predict.py + pycocotools {predict_ap:.4f}")
