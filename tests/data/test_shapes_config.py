"""configs/shapes_r18_fpn.yaml: the synthetic default registers, trains and gets the COCO table."""
import csv
from pathlib import Path

import pytest
import torch

import fpn_plugin
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultTrainer

from fpn_plugin.data import setup_datasets
from fpn_plugin.data.builtin import register_default_shapes
from fpn_plugin.evaluation import build_evaluator

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes_r18_fpn.yaml"


@pytest.mark.slow
def test_shapes_config_trains_a_few_iterations_and_evaluates(tmp_path):
    cfg = get_cfg()
    fpn_plugin.add_fpn_plugin_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    # The config's recipe on a smaller, separate copy of the data: 3 iterations of 2 images,
    # 4 val images.
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "DATASETS.SHAPES.CACHE_DIR", str(tmp_path / "shapes"),
        "DATASETS.SHAPES.NUM_TRAIN", "8", "DATASETS.SHAPES.NUM_VAL", "4",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "()",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
        # After 3 iterations scores are low: keep every detection so the table has numbers;
        # and BN's running statistics are still far off, so recompute them (PreciseBN).
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.NUM_ITER", "3",
    ])
    try:
        assert setup_datasets(cfg, str(CONFIG)) == 3
        assert len(DatasetCatalog.get("shapes_val")) == 4
        torch.manual_seed(0)
        trainer = DefaultTrainer(cfg)
        trainer.train()
        out = tmp_path / "out" / "eval"
        results = DefaultTrainer.test(cfg, trainer.model, [build_evaluator(cfg, "shapes_val", str(out))])
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-circle"} <= set(results["bbox"])
        rows = list(csv.reader(open(out / "coco_per_category_ap.csv")))
        assert [r[0] for r in rows] == ["category", "circle", "square", "triangle", "mean"]
        assert (tmp_path / "out" / "model_final.pth").is_file()
    finally:
        register_default_shapes()
