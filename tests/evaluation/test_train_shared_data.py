"""The shared VOC subset and facemask COCO data register from a config, train a few iterations
with the plugin's R18-FPN and fpn_plugin's trainer, and evaluate with the right table."""
import csv
import json
import logging
from pathlib import Path

import pytest
import torch

import fpn_plugin
from detectron2.config import get_cfg

from fpn_plugin.data import setup_datasets
from fpn_plugin.engine import Trainer
from fpn_plugin.evaluation import build_evaluator

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
VOC = SHARED_DATA / "voc2007_subset" / "VOCdevkit" / "VOC2007"
FACEMASK = SHARED_DATA / "facemask_coco"


def _tiny_cfg(tmp_path, yaml_text):
    """The plugin's R18-FPN (configs/fpn_r18.yaml) from scratch, tiny images, 2 iterations."""
    cfg = get_cfg()
    fpn_plugin.add_fpn_plugin_config(cfg)
    cfg.merge_from_file(str(CONFIGS / "fpn_r18.yaml"))
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml_text)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.FREEZE_AT", "0",
        # From scratch: GroupNorm keeps activations finite (FrozenBN would let them explode).
        "MODEL.PLUGIN_RESNET.NORM", "GN", "MODEL.FPN.NORM", "GN",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.BASE_LR", "0.001",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    return cfg, str(path)


def _train_and_evaluate(cfg, config_file):
    num_classes = setup_datasets(cfg, config_file)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.train()
    assert trainer.cfg.MODEL.BACKBONE.NAME == "build_plugin_resnet_fpn_backbone"
    name = cfg.DATASETS.TEST[0]
    out = Path(cfg.OUTPUT_DIR) / "eval"
    results = Trainer.test(cfg, trainer.model, [build_evaluator(cfg, name, str(out))])
    return num_classes, trainer.model, results, out


@pytest.mark.slow
def test_voc_subset_trains_and_gets_the_voc_table(tmp_path, caplog):
    if not (VOC / "Annotations").is_dir():
        pytest.skip(f"the shared VOC2007 subset is not at {VOC} (only on the dev machine)")
    # A 12-image subset of val, as a list file next to the config, keeps CPU inference short.
    ids = (VOC / "ImageSets" / "Main" / "val.txt").read_text().split()[:12]
    (tmp_path / "val12.txt").write_text("\n".join(ids) + "\n")
    cfg, path = _tiny_cfg(tmp_path, f"""
DATASETS:
  CUSTOM:
    vocsub_train: {{FORMAT: vocdevkit, DIR: {VOC}, SPLIT: train, YEAR: 2007}}
    vocsub_val: {{FORMAT: vocdevkit, DIR: {VOC}, SPLIT: val12.txt, YEAR: 2007}}
  TRAIN: ("vocsub_train",)
  TEST: ("vocsub_val",)
TEST: {{REFERENCE: faster_rcnn_vgg16_voc07}}
""")
    with caplog.at_level(logging.INFO, logger="fpn_plugin"):
        num_classes, model, results, out = _train_and_evaluate(cfg, path)
    assert num_classes == 20 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20
    assert model.roi_heads.box_predictor.cls_score.out_features == 21
    bbox = results["bbox"]
    assert {"AP50_07", "AP50_area", "AP50", "AP75", "AP", "AP50_07-person"} <= set(bbox)
    assert 0.0 <= bbox["AP50_07"] <= 100.0 and bbox["AP50"] == bbox["AP50_07"]  # YEAR 2007
    rows = list(csv.reader(open(out / "voc_per_class_ap.csv")))
    assert rows[0][:3] == ["class", "AP50 (VOC07 11-point)", "AP50 (area, VOC2010+)"]
    assert len(rows) == 1 + 20 + 1 and rows[-1][0] == "mean"
    # The table counts the 12 images' boxes, difficult ones apart (counted here from the XMLs).
    xml = [(VOC / "Annotations" / f"{i}.xml").read_text() for i in ids]
    difficult = sum(x.count("<difficult>1</difficult>") for x in xml)
    assert (int(rows[-1][3]), int(rows[-1][4])) == (sum(x.count("<object>") for x in xml) - difficult, difficult)
    assert "predictions on 12 images (0 images without any)" in caplog.text
    comparison = list(csv.reader(open(out / "reference_comparison.csv")))
    assert comparison[0] == ["metric", "ours", "reference", "difference"]
    assert comparison[1][0] == "AP50_07" and comparison[1][2] == "69.9"


@pytest.mark.slow
def test_facemask_trains_and_gets_the_coco_table(tmp_path):
    if not (FACEMASK / "annotations" / "custom_val.json").is_file():
        pytest.skip(f"the shared facemask COCO dataset is not at {FACEMASK} (only on the dev machine)")
    # A 12-image val subset keeps CPU inference short; category ids stay 0..2.
    val = json.load(open(FACEMASK / "annotations" / "custom_val.json"))
    keep = {img["id"] for img in val["images"][:12]}
    val["images"] = [i for i in val["images"] if i["id"] in keep]
    val["annotations"] = [a for a in val["annotations"] if a["image_id"] in keep]
    (tmp_path / "val12.json").write_text(json.dumps(val))
    cfg, path = _tiny_cfg(tmp_path, f"""
DATASETS:
  CUSTOM:
    masks_train: {{FORMAT: coco, JSON: {FACEMASK}/annotations/custom_train.json, IMAGES: {FACEMASK}/train2017}}
    masks_val: {{FORMAT: coco, JSON: val12.json, IMAGES: {FACEMASK}/val2017}}
  TRAIN: ("masks_train",)
  TEST: ("masks_val",)
""")
    num_classes, model, results, out = _train_and_evaluate(cfg, path)
    assert num_classes == 3 and model.roi_heads.box_predictor.cls_score.out_features == 4
    bbox = results["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-with_mask", "AP50-without_mask"} <= set(bbox)
    rows = list(csv.reader(open(out / "coco_per_category_ap.csv")))
    assert [r[0] for r in rows] == ["category", "mask_weared_incorrect", "with_mask", "without_mask", "mean"]
    assert int(rows[-1][3]) == len(val["annotations"])
    # Predictions were mapped back to the dataset's ids 0..2.
    preds = json.load(open(out / "coco_instances_results.json"))
    assert preds and {p["category_id"] for p in preds} <= {0, 1, 2}
