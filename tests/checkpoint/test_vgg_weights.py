"""torchvision / Caffe VGG16 weight files into the plugin's VGG16 models, and the wrong files."""
from pathlib import Path

import pytest
import torch
import torchvision

import fpn_plugin  # noqa: F401  (applies compat before detectron2's submodules)
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from fpn_plugin import add_fpn_plugin_config
from fpn_plugin.checkpoint import PixelFormatMismatchError, PluginCheckpointer, torchvision_urls
from fpn_plugin.checkpoint.vgg import (
    looks_like_vgg_state_dict,
    vgg16_pixel_mismatches,
    vgg16_to_plugin,
    vgg16_weights_flavor,
)
from fpn_plugin.modeling.vgg import VGG16_CONV_INDICES

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONV_KEYS = [f"features.{i}.{p}" for i in VGG16_CONV_INDICES for p in ("weight", "bias")]
FC_KEYS = [f"classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")]


def _cfg(name):
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A random torchvision vgg16 saved as torchvision's file and as vgg16_caffe.pth.

    Both real files are ``torch.save`` of a vgg16 state dict (an OrderedDict); the Caffe
    one gets other random values, so a mix-up between the two would show.
    """
    folder = tmp_path_factory.mktemp("vgg16_weights")
    paths = {}
    for seed, name in [(1, "vgg16-397923af.pth"), (2, "vgg16_caffe.pth")]:
        torch.manual_seed(seed)
        paths[name] = folder / name
        torch.save(torchvision.models.vgg16().state_dict(), paths[name])
    return paths


@pytest.fixture(scope="module")
def paper_model():
    return build_model(_cfg("vgg16_voc07.yaml"))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_loads_every_tensor(model, state_dict, backbone_prefix, head_prefix):
    converted = vgg16_to_plugin(state_dict, model)
    expected = {backbone_prefix + k: k for k in CONV_KEYS}
    if head_prefix:
        expected.update({head_prefix + k: k for k in FC_KEYS})
    assert set(converted) == set(expected)
    result = model.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == []
    # What stays unloaded is only what VGG16 ImageNet weights do not have.
    vgg_modules = (backbone_prefix + "features.", head_prefix or "<none>")
    assert not [k for k in result.missing_keys if k.startswith(vgg_modules)]
    loaded = model.state_dict()
    for name, key in expected.items():
        assert torch.equal(loaded[name], state_dict[key]), name
    return result.missing_keys


@pytest.mark.parametrize(
    "config, file",
    [("vgg16_voc07.yaml", "vgg16-397923af.pth"), ("vgg16_caffe_voc07.yaml", "vgg16_caffe.pth")],
)
def test_weight_file_loads_every_backbone_and_fc_tensor(weight_files, paper_model, config, file):
    state_dict = _load(weight_files[file])
    missing = _assert_loads_every_tensor(
        paper_model, state_dict, "backbone.", "roi_heads.box_head."
    )
    # Only the RPN and the predictor have no ImageNet counterpart.
    new_layers = ("proposal_generator.rpn_head.", "roi_heads.box_predictor.")
    assert missing and all(k.startswith(new_layers) for k in missing)
    # The config made for this file expects exactly the pixels the file was trained on.
    flavor = vgg16_weights_flavor(weight_files[file])
    assert flavor == ("caffe" if "caffe" in file else "torchvision")
    assert vgg16_pixel_mismatches(_cfg(config), flavor) == []


def test_fpn_model_takes_the_convs_under_bottom_up(weight_files):
    model = build_model(_cfg("fpn_vgg16.yaml"))
    state_dict = _load(weight_files["vgg16-397923af.pth"])
    missing = _assert_loads_every_tensor(model, state_dict, "backbone.bottom_up.", None)
    assert not [k for k in missing if k.startswith("backbone.bottom_up.")]
    # The FPN's box head is FastRCNNConvFCHead, not fc6/fc7: left to its own initialisation.
    assert "roi_heads.box_head.fc1.weight" in missing


def _no_network(url, dst):
    raise AssertionError(f"the test tried to download {url}")


@pytest.mark.parametrize("config", ["vgg16_voc07.yaml", "vgg16_caffe_voc07.yaml", "fpn_vgg16.yaml"])
def test_model_weights_path_loads_the_files(weight_files, tmp_path, monkeypatch, config):
    """Through MODEL.WEIGHTS and the plugin checkpointer, as training and evaluation load it."""
    cfg = _cfg(config)
    if "caffe" in config:
        cfg.MODEL.WEIGHTS = str(weight_files["vgg16_caffe.pth"])
        reference = weight_files["vgg16_caffe.pth"]
    else:
        # The configs' torchvision://vgg16, served from torch's hub cache (never downloaded).
        cfg.MODEL.WEIGHTS = "torchvision://vgg16"
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        monkeypatch.setattr(torchvision_urls, "_download", _no_network)
        cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
        cached.parent.mkdir(parents=True)
        cached.symlink_to(weight_files["vgg16-397923af.pth"])
        reference = cached
    model = build_model(cfg)
    checkpointer = PluginCheckpointer(model, format_check=cfg.MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    state_dict, loaded = _load(reference), model.state_dict()
    prefix = "backbone.bottom_up." if "fpn" in config else "backbone."
    for key in CONV_KEYS:
        assert torch.equal(loaded[prefix + key], state_dict[key]), key
    if "fpn" not in config:
        for key in FC_KEYS:
            assert torch.equal(loaded["roi_heads.box_head." + key], state_dict[key]), key


def test_model_weights_path_refuses_a_classifier_only_file(weight_files, paper_model, tmp_path):
    full = _load(weight_files["vgg16-397923af.pth"])
    path = tmp_path / "vgg16_classifier.pth"
    torch.save({k: v for k, v in full.items() if k.startswith("classifier.")}, path)
    message = r"only (the|a) classifier.*(backbone would stay randomly|no backbone weights)"
    with pytest.raises(Exception, match=message):
        PluginCheckpointer(paper_model).load(str(path))


def test_model_weights_path_checks_the_pixels_the_file_expects(weight_files, paper_model):
    # paper_model is vgg16_voc07.yaml (torchvision's RGB pixels); vgg16_caffe.pth wants BGR.
    with pytest.raises(PixelFormatMismatchError, match=r"expects caffe VGG16 .*inputs: BGR"):
        PluginCheckpointer(paper_model, format_check="error").load(
            str(weight_files["vgg16_caffe.pth"])
        )


def test_pixel_settings_of_the_other_flavor_are_reported():
    problems = vgg16_pixel_mismatches(_cfg("vgg16_voc07.yaml"), "caffe")
    assert len(problems) == 3
    assert "INPUT.FORMAT is 'RGB', but caffe VGG16 weights expect 'BGR'" in problems
    assert any(p.startswith("MODEL.PIXEL_STD is [58.395") for p in problems)
    assert len(vgg16_pixel_mismatches(_cfg("vgg16_caffe_voc07.yaml"), "torchvision")) == 3
    with pytest.raises(ValueError, match="Unknown VGG16 weights flavor 'keras'"):
        vgg16_pixel_mismatches(_cfg("vgg16_voc07.yaml"), "keras")


def _state_dict(factory):
    torch.manual_seed(3)
    return factory().state_dict()


def test_vgg19_is_named_and_refused(paper_model):
    state_dict = _state_dict(torchvision.models.vgg19)
    assert looks_like_vgg_state_dict(state_dict)
    message = r"16 conv layers .*that is VGG19, but fpn_plugin's VGG16 has 13"
    with pytest.raises(ValueError, match=message):
        vgg16_to_plugin(state_dict, paper_model)


def test_vgg16_bn_is_refused(paper_model):
    state_dict = _state_dict(torchvision.models.vgg16_bn)
    assert looks_like_vgg_state_dict(state_dict)
    with pytest.raises(ValueError, match=r"VGG with batch norm \(vgg16_bn.*without batch norm"):
        vgg16_to_plugin(state_dict, paper_model)


def test_classifier_only_file_is_refused(weight_files, paper_model):
    full = _load(weight_files["vgg16-397923af.pth"])
    state_dict = {k: v for k, v in full.items() if k.startswith("classifier.")}
    message = r"only the classifier \(classifier\.0\.bias.*backbone would stay randomly"
    with pytest.raises(ValueError, match=message):
        vgg16_to_plugin(state_dict, paper_model)


def test_missing_fc6_fc7_is_refused_when_the_head_needs_them(weight_files, paper_model):
    full = _load(weight_files["vgg16-397923af.pth"])
    convs_only = {k: v for k, v in full.items() if k.startswith("features.")}
    message = r"VGG16BoxHead \(roi_heads.box_head\).*no classifier.0.weight"
    with pytest.raises(ValueError, match=message):
        vgg16_to_plugin(convs_only, paper_model)


def test_wrong_shape_is_refused(weight_files, paper_model):
    state_dict = dict(_load(weight_files["vgg16-397923af.pth"]))
    state_dict["features.28.weight"] = torch.zeros(256, 512, 3, 3)
    message = (
        r"features.28.weight has shape \(256, 512, 3, 3\), but the model's "
        r"backbone.features.28.weight has shape \(512, 512, 3, 3\)"
    )
    with pytest.raises(ValueError, match=message):
        vgg16_to_plugin(state_dict, paper_model)


def test_other_network_and_other_model_are_refused(weight_files, paper_model):
    resnet = _state_dict(torchvision.models.resnet18)
    assert not looks_like_vgg_state_dict(resnet)
    message = r"Not a torchvision-layout VGG state dict: .* e.g. \['conv1.weight'"
    with pytest.raises(ValueError, match=message):
        vgg16_to_plugin(resnet, paper_model)
    wrapped = {"state_dict": {}, "epoch": 3}
    with pytest.raises(ValueError, match="a 'state_dict' or 'model' entry"):
        vgg16_to_plugin(wrapped, paper_model)
    not_vgg = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match=r"has no fpn_plugin VGG16 backbone.*build_vgg16_backbone"):
        vgg16_to_plugin(_load(weight_files["vgg16-397923af.pth"]), not_vgg)
