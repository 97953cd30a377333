"""detectron2's own loading routes give plugin models what PluginCheckpointer gives them.

``DetectionCheckpointer`` (so ``DefaultPredictor`` and ``DefaultTrainer``) and plain
``model.load_state_dict`` with a detectron2 detector file; and for prediction (an eval-mode
model) nothing may stay at random initialisation: a box predictor of another class count or an
ImageNet backbone alone is an error, while training (fine-tuning) may start a new predictor.
"""
import logging

import pytest
import torch

from _weight_files import detectron2_builtin_model, plugin_cfg, save_detectron2_checkpoint, save_torchvision_resnet
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from fpn_plugin.checkpoint import CheckpointMismatchError, PluginCheckpointer
from fpn_plugin.checkpoint.resnet_formats import detectron2_resnet_to_plugin


@pytest.fixture(scope="module")
def d2_files(tmp_path_factory):
    """A random detectron2 builtin R50-FPN, its expected plugin state, and its files."""
    directory = tmp_path_factory.mktemp("d2_route")
    d2 = detectron2_builtin_model(seed=5)
    pth, pkl = save_detectron2_checkpoint(d2, directory)
    plugin = build_model(plugin_cfg("fpn_r50.yaml"))
    expected = detectron2_resnet_to_plugin(d2.state_dict(), plugin)
    return {"pth": str(pth), "pkl": str(pkl), "expected": expected, "d2_state": d2.state_dict()}


def _assert_state(model, expected):
    state = model.state_dict()
    assert set(state) == set(expected)
    different = [k for k in state if not torch.equal(state[k], expected[k])]
    assert different == []


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["pth", "pkl"])
def test_detection_checkpointer_and_default_predictor_load_every_weight(d2_files, suffix):
    path = d2_files[suffix]
    model = build_model(plugin_cfg("fpn_r50.yaml")).eval()
    DetectionCheckpointer(model).load(path)
    _assert_state(model, d2_files["expected"])
    # DefaultPredictor builds the model and a plain DetectionCheckpointer itself.
    predictor = DefaultPredictor(plugin_cfg("fpn_r50.yaml", weights=path))
    _assert_state(predictor.model, d2_files["expected"])


@pytest.mark.slow
def test_load_state_dict_takes_detectron2_names_strictly(d2_files):
    model = build_model(plugin_cfg("fpn_r50.yaml"))
    state = {k: v for k, v in d2_files["d2_state"].items() if k not in ("pixel_mean", "pixel_std")}
    assert str(model.load_state_dict(state)) == "<All keys matched successfully>"
    _assert_state(model, d2_files["expected"])
    del state["backbone.bottom_up.res3.0.conv2.weight"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*backbone.bottom_up.layer2.0.conv2.weight"):
        model.load_state_dict(state)


@pytest.mark.slow
def test_a_box_predictor_of_another_class_count_is_refused_for_prediction(d2_files, caplog):
    cfg = plugin_cfg("fpn_r50.yaml", **{"MODEL.ROI_HEADS.NUM_CLASSES": 5})
    with pytest.raises(CheckpointMismatchError, match=r"the file's box predictor has 80 classes, the model's 5"):
        DetectionCheckpointer(build_model(cfg).eval()).load(d2_files["pth"])
    with pytest.raises(CheckpointMismatchError, match="MODEL.ROI_HEADS.NUM_CLASSES 80"):
        PluginCheckpointer(build_model(cfg), for_inference=True).load(d2_files["pth"])
    # Training (fine-tuning to 5 classes) may start a new predictor, and says so.
    with caplog.at_level(logging.WARNING, logger="fpn_plugin.checkpoint.mismatch"):
        DetectionCheckpointer(build_model(cfg).train()).load(d2_files["pth"])
    assert "Fine-tuning to another class count: the file's box predictor has 80 classes" in caplog.text


def test_an_imagenet_backbone_alone_is_refused_for_prediction(tmp_path):
    path = tmp_path / "resnet18-random.pth"
    save_torchvision_resnet(path, 18)
    cfg = plugin_cfg("fpn_r18.yaml", **{"MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK": "off"})
    with pytest.raises(CheckpointMismatchError, match=r"an ImageNet backbone \(torchvision ImageNet ResNet\).*would stay at random"):
        DetectionCheckpointer(build_model(cfg).eval()).load(str(path))
    DetectionCheckpointer(build_model(cfg).train()).load(str(path))  # pre-training: fine


def test_models_without_plugin_modules_load_as_detectron2_loads_them(tmp_path):
    from _weight_files import detectron2_builtin_cfg

    cfg = detectron2_builtin_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 18, 64
    source = build_model(cfg)
    path = tmp_path / "builtin_r18.pth"
    torch.save({"model": source.state_dict()}, path)
    target = build_model(cfg).eval()
    DetectionCheckpointer(target).load(str(path))
    _assert_state(target, source.state_dict())
