"""Proposal inspection: recall of proposals that are the ground truth is 1.0; drawing."""
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, Instances, Boxes

from fpn_plugin.inference.proposals import ProposalsOnly, draw_proposals, proposal_recall

from .conftest import CLASS_NAMES, ground_truth_proposals_cfg


def _dataset(tmp_path, string_ids=False):
    from PIL import Image

    records, rng = [], np.random.default_rng(0)
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
        # Small, medium and large objects (COCO's 32 and 96 pixel limits).
        boxes = [[5, 5, 25, 25], [30, 20, 90, 80], [10, 5, 150, 115]][: i + 1]
        records.append({
            "file_name": str(path), "image_id": f"{i:06d}" if string_ids else i,
            "height": 120, "width": 160,
            "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0} for b in boxes],
        })
    return records


@pytest.fixture(params=["int ids", "string ids"])
def gt_proposal_setup(tmp_path, request):
    # String image ids as VOC has ("000001"): pycocotools once read them as lists of characters.
    name = f"proposal_test_{tmp_path.name}"
    records = _dataset(tmp_path, string_ids=request.param == "string ids")
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=CLASS_NAMES)
    cfg = ground_truth_proposals_cfg(name, records, tmp_path / "proposals.pkl")
    yield cfg, name
    DatasetCatalog.remove(name)


def test_recall_of_ground_truth_proposals_is_one(gt_proposal_setup, tmp_path):
    cfg, name = gt_proposal_setup
    recall = proposal_recall(cfg, name, output_dir=str(tmp_path / "eval"))
    assert recall["AR@100"] == pytest.approx(100.0)
    with open(tmp_path / "eval" / "box_proposals.pkl", "rb") as f:  # reusable as a proposals file
        saved = pickle.load(f)
    assert saved["ids"] == [r["image_id"] for r in DatasetCatalog.get(name)]
    assert recall["AR@1000"] == pytest.approx(100.0)
    for size in ("ARs@100", "ARm@100", "ARl@100"):
        assert recall[size] == pytest.approx(100.0), size


def test_rpn_proposals_are_in_image_coordinates_and_limited(tiny_detector):
    from detectron2.modeling import build_model

    cfg, _ = tiny_detector
    model = ProposalsOnly(build_model(cfg).eval(), post_nms_topk=50)
    image = torch.randint(0, 256, (3, 96, 128)).float()
    (output,) = model([{"image": image, "height": 192, "width": 256}])
    props = output["proposals"]
    assert 0 < len(props) <= 50
    assert props.image_size == (192, 256)
    assert props.proposal_boxes.tensor[:, 2].max() <= 256 and props.proposal_boxes.tensor[:, 3].max() <= 192


def test_draw_proposals_draws_only_the_top_k():
    image = np.zeros((60, 80, 3), np.uint8)
    props = Instances((60, 80))
    props.proposal_boxes = Boxes(torch.tensor([[5.0, 5, 20, 20], [40, 30, 70, 55]]))
    props.objectness_logits = torch.tensor([0.1, 3.0])
    drawn = draw_proposals(image, props, top_k=1)
    assert drawn.shape == (60, 80, 3)
    # Only the best proposal (right-hand box) is drawn.
    assert drawn[28:58, 38:72].any() and not drawn[3:22, 3:22].any()


def test_cli_registers_the_configs_datasets(tmp_path, capsys):
    # The config's shapes settings (a cache folder not generated yet) must be the ones used,
    # not the default registration made at import.
    from pathlib import Path

    from fpn_plugin.inference.proposals import main

    config = Path(__file__).resolve().parents[2] / "configs" / "shapes_r18_fpn.yaml"
    main(["--config-file", str(config), "DATASETS.SHAPES.CACHE_DIR", str(tmp_path / "shapes"),
          "DATASETS.SHAPES.NUM_TRAIN", "2", "DATASETS.SHAPES.NUM_VAL", "2",
          "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert any(line.split()[:1] == ["AR@100"] for line in printed.splitlines()), printed
    assert list((tmp_path / "shapes").rglob("val.json"))


@pytest.mark.parametrize("check", ["error", "warn", "off"])
def test_recall_loads_weights_with_the_configs_format_check(gt_proposal_setup, tmp_path, caplog, check):
    # A checkpoint that records RGB torchvision pixel stats, for a config with BGR MSRA ones.
    import logging
    import re

    from detectron2.modeling import build_model

    from fpn_plugin.checkpoint import PixelFormatMismatchError
    from fpn_plugin.checkpoint.metadata import ModelMetadata

    cfg, name = gt_proposal_setup
    state = build_model(cfg).state_dict()
    # float64, so that the message's numbers read as written here.
    state["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53], dtype=torch.float64).view(3, 1, 1)
    state["pixel_std"] = torch.tensor([58.395, 57.12, 57.375], dtype=torch.float64).view(3, 1, 1)
    path = tmp_path / "rgb_weights.pth"
    torch.save({"model": state, "metadata": ModelMetadata(CLASS_NAMES).state_dict()}, path)
    cfg.MODEL.WEIGHTS = str(path)
    cfg.MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK = check
    problem = "The config differs: MODEL.PIXEL_MEAN is [103.53, 116.28, 123.675], not [123.675, 116.28, 103.53]"
    if check == "error":
        with pytest.raises(PixelFormatMismatchError, match=re.escape(problem)):
            proposal_recall(cfg, name, output_dir=str(tmp_path / "eval"))
        return
    with caplog.at_level(logging.WARNING, logger="fpn_plugin.checkpoint.loading"):
        recall = proposal_recall(cfg, name, output_dir=str(tmp_path / "eval"))
    assert recall["AR@100"] == pytest.approx(100.0)
    assert (problem in caplog.text) == (check == "warn")
