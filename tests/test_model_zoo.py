"""fpn_plugin.model_zoo and the top-level API: the shipped configs, a built model, its weights."""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor

import fpn_plugin
from fpn_plugin import add_fpn_plugin_config, model_zoo

CONFIG = "shapes_r18_fpn.yaml"  # the smallest model


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_public_api_is_the_documented_names():
    from fpn_plugin.engine import Trainer
    from fpn_plugin.inference import Predictor
    from fpn_plugin.inference.fast_cpu import optimize_for_cpu

    assert sorted(fpn_plugin.__all__) == sorted(
        ["add_fpn_plugin_config", "load_config", "model_zoo", "Trainer", "Predictor", "optimize_for_cpu"])
    assert (fpn_plugin.Trainer, fpn_plugin.Predictor, fpn_plugin.optimize_for_cpu) == (
        Trainer, Predictor, optimize_for_cpu)
    with pytest.raises(AttributeError, match="no attribute 'Trainr'"):
        fpn_plugin.Trainr


def test_config_files_are_the_repository_configs():
    from pathlib import Path

    repo_configs = Path(__file__).resolve().parents[1] / "configs"
    assert model_zoo.list_configs() == sorted(p.name for p in repo_configs.glob("*.yaml"))
    path = Path(model_zoo.get_config_file("fpn_r50.yaml"))
    assert path.read_bytes() == (repo_configs / "fpn_r50.yaml").read_bytes()
    assert model_zoo.get_config_file("configs/fpn_r50.yaml") == str(path)
    with pytest.raises(FileNotFoundError, match=r"no config 'fpn_r5\.yaml'.*did you mean fpn_r50\.yaml"):
        model_zoo.get_config_file("fpn_r5.yaml")
    cfg = model_zoo.get_config("fpn_r50.yaml", ["MODEL.PLUGIN_RESNET.DEPTH", "101"])
    assert cfg.MODEL.PLUGIN_RESNET.DEPTH == 101 and cfg.MODEL.BACKBONE.NAME == "build_plugin_resnet_fpn_backbone"


def test_get_builds_random_model_then_loads_every_weight_from_a_file(tmp_path):
    torch.manual_seed(0)
    trained = model_zoo.get(CONFIG)
    assert not trained.training and next(trained.parameters()).device.type == "cpu"
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("model")
    torch.manual_seed(1)
    first = next(name for name, _ in trained.named_parameters())
    assert not torch.equal(model_zoo.get(CONFIG).state_dict()[first], trained.state_dict()[first])
    loaded = model_zoo.get(CONFIG, weights=str(tmp_path / "model.pth"))
    expected, got = trained.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_readme_snippet_default_predictor_on_a_shipped_config(tmp_path):
    torch.manual_seed(0)
    DetectionCheckpointer(model_zoo.get(CONFIG), save_dir=str(tmp_path)).save("model_final")
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file(CONFIG))
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pth")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # a random model: keep its detections to compare
    image = np.random.RandomState(0).randint(0, 255, (96, 128, 3), dtype=np.uint8)
    got = DefaultPredictor(cfg)(image)["instances"]
    (expected,) = fpn_plugin.Predictor(cfg).predict([image], "BGR")
    expected = expected["instances"]
    assert got.image_size == (96, 128) and len(got) > 0
    assert len(got) == len(expected)
    assert torch.allclose(got.pred_boxes.tensor, expected.pred_boxes.tensor, atol=1e-4)
    assert torch.equal(got.pred_classes, expected.pred_classes)
