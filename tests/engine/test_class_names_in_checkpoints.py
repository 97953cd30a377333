"""Checkpoints written by the trainer carry the class names; the Predictor reads them back."""
import os

import torch
from detectron2.data import DatasetCatalog

from _tiny import register_synthetic, tiny_cfg
from fpn_plugin.engine import Trainer
from fpn_plugin.inference import Predictor


def test_trained_checkpoint_predicts_with_class_names_and_no_registration(tmp_path):
    name = register_synthetic("class_names_train", str(tmp_path))
    cfg = tiny_cfg(str(tmp_path / "out"), name, max_iter=2)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    final = tmp_path / "out" / "model_final.pth"
    saved = torch.load(final, map_location="cpu", weights_only=False)
    assert saved["metadata"] == {"class_names": ["red", "green"]}

    # A fresh config that names no dataset, as on another machine.
    DatasetCatalog.remove(name)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TRAIN = ()
    cfg.MODEL.WEIGHTS = str(final)
    assert Predictor(cfg).class_names == ["red", "green"]
    assert os.path.isfile(final)
