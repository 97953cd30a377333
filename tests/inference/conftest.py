"""A tiny detector with random weights saved to a file, shared by the inference tests."""
import pytest
import torch

import fpn_plugin  # noqa: F401
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from fpn_plugin import add_fpn_plugin_config
from fpn_plugin.checkpoint.metadata import ModelMetadata

CLASS_NAMES = ["circle", "square", "triangle"]


def tiny_cfg():
    cfg = get_cfg()
    add_fpn_plugin_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(CLASS_NAMES)
    # Random weights score low: keep every detection so there is something to compare.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 160
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""  # the model-zoo config names ImageNet weights: no network in tests
    return cfg


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory):
    """(cfg, path): a config and a checkpoint with randomised weights and class names."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)  # detectron2's random initialisation
    path = tmp_path_factory.mktemp("weights") / "model_tiny.pth"
    torch.save({"model": model.state_dict(), "metadata": ModelMetadata(CLASS_NAMES).state_dict()}, path)
    cfg.MODEL.WEIGHTS = str(path)
    return cfg, path


def ground_truth_proposals_cfg(dataset: str, records, path):
    """A tiny_cfg that reads precomputed proposals which are exactly ``records``' boxes.

    The proposals are written to ``path`` in detectron2's file format (XYXY_ABS boxes).
    """
    import pickle

    import numpy as np
    from detectron2.structures import BoxMode

    boxes = [np.array([BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                       for a in r["annotations"]], np.float32).reshape(-1, 4) for r in records]
    with open(path, "wb") as f:
        pickle.dump({"ids": [r["image_id"] for r in records], "boxes": boxes,
                     "objectness_logits": [np.ones(len(b), np.float32) for b in boxes],
                     "bbox_mode": BoxMode.XYXY_ABS}, f)
    cfg = tiny_cfg()
    cfg.MODEL.LOAD_PROPOSALS = True
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
    cfg.DATASETS.TEST = (dataset,)
    cfg.DATASETS.PROPOSAL_FILES_TEST = (str(path),)
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg
