"""Every ResNet weight format loads through MODEL.WEIGHTS; every mismatch raises its error."""
import logging
import urllib.error

import pytest
import torch

from _weight_files import (
    detectron2_builtin_cfg,
    plugin_cfg,
    save_msra_pkl,
    save_torchvision_resnet,
    torchvision_resnet,
)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone, build_model

from fpn_plugin.checkpoint import (
    CheckpointMismatchError,
    PixelFormatMismatchError,
    PluginCheckpointer,
    torchvision_urls,
)

TV_CONFIG = {18: "fpn_r18.yaml", 34: "fpn_r34.yaml", 50: "fpn_r50_torchvision.yaml",
             101: "fpn_r50_torchvision.yaml", 152: "fpn_r50_torchvision.yaml"}


def _tv_model(depth, weights="", config=None, **overrides):
    overrides.setdefault("MODEL.PLUGIN_RESNET.DEPTH", depth)
    return build_model(plugin_cfg(config or TV_CONFIG[depth], weights, **overrides)).eval()


def _assert_loaded(state, file_state, prefix, skip=("fc.",)):
    """Every non-classifier tensor of the file is in the model under ``prefix``, bit for bit."""
    n = 0
    for key, value in file_state.items():
        if key.startswith(skip) or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(state[prefix + key], value), key
        n += 1
    assert n > 0


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_pth_every_depth(tmp_path, depth):
    path = tmp_path / f"resnet{depth}.pth"
    file_state = save_torchvision_resnet(path, depth, seed=depth)
    if depth <= 50:
        model, prefix = _tv_model(depth), "backbone.bottom_up."
    else:
        # The backbone alone keeps the deep ones cheap; the checkpointer takes any module.
        cfg = plugin_cfg(TV_CONFIG[depth], **{"MODEL.PLUGIN_RESNET.DEPTH": depth})
        model, prefix = build_backbone(cfg), "bottom_up."
    PluginCheckpointer(model).load(str(path))
    _assert_loaded(model.state_dict(), file_state, prefix)


def test_torchvision_pth_into_c4_head(tmp_path):
    """The C4 model takes layer1..3 for its backbone and layer4 for its ROI head, same file."""
    path = tmp_path / "resnet50.pth"
    file_state = save_torchvision_resnet(path, 50)
    model = build_model(plugin_cfg("r50_c4_voc07.yaml")).eval()
    PluginCheckpointer(model).load(str(path))
    state = model.state_dict()
    _assert_loaded(state, {k: v for k, v in file_state.items() if not k.startswith("layer4.")},
                   "backbone.")
    _assert_loaded(state, {k[len("layer4."):]: v for k, v in file_state.items()
                           if k.startswith("layer4.")}, "roi_heads.res5.")


def test_msra_r50_pkl_matches_detectron2_loading(tmp_path):
    """R-50.pkl (Caffe2 names, folded BN): the same res2..res5 as detectron2's own ResNet."""
    path = tmp_path / "R-50.pkl"
    tv = torchvision_resnet(50, seed=7)
    save_msra_pkl(path, tv.state_dict())
    model = build_model(plugin_cfg("fpn_r50.yaml")).eval()
    PluginCheckpointer(model).load(str(path))

    d2 = build_model(detectron2_builtin_cfg()).eval()
    DetectionCheckpointer(d2).load(str(path))
    x = torch.randn(1, 3, 64, 96) * 50
    with torch.no_grad():
        ours, theirs = model.backbone.bottom_up(x), d2.backbone.bottom_up(x)
    for name in ("res2", "res3", "res4", "res5"):
        diff = (ours[name] - theirs[name]).abs().max().item()
        assert diff <= 1e-5 * max(1.0, theirs[name].abs().max().item()), (name, diff)


def test_msra_r101_pkl_in_blobs_loads(tmp_path):
    """R-101.pkl, here with its weights under "blobs" as some Caffe2 files have them."""
    path = tmp_path / "R-101.pkl"
    save_msra_pkl(path, torchvision_resnet(101, seed=5).state_dict(), with_blobs=True)
    cfg = plugin_cfg("fpn_r101.yaml")
    model = build_backbone(cfg)
    PluginCheckpointer(model).load(str(path))
    import pickle

    with open(path, "rb") as f:
        blobs = pickle.load(f)["blobs"]
    state = model.state_dict()
    assert torch.equal(state["bottom_up.layer3.22.conv2.weight"],
                       torch.as_tensor(blobs["res4_22_branch2b_w"]))
    assert torch.equal(state["bottom_up.layer4.0.downsample.1.bias"],
                       torch.as_tensor(blobs["res5_0_branch1_bn_b"]))
    assert torch.equal(state["bottom_up.bn1.weight"], torch.as_tensor(blobs["res_conv1_bn_s"]))
    assert torch.equal(state["bottom_up.layer1.0.bn1.running_var"], torch.ones(64))


def test_msra_pkl_equals_unfolded_network(tmp_path):
    """Folding BN into scale/shift loses nothing: same outputs as the torchvision-named original."""
    path = tmp_path / "R-50.pkl"
    tv = torchvision_resnet(50, seed=2)
    save_msra_pkl(path, tv.state_dict())
    folded = build_backbone(plugin_cfg("fpn_r50.yaml")).eval()
    PluginCheckpointer(folded).load(str(path))
    unfolded = build_backbone(plugin_cfg("fpn_r50.yaml")).eval()
    unfolded.bottom_up.load_state_dict(
        {k: v for k, v in tv.state_dict().items() if k.startswith(("conv1", "bn1", "layer"))
         and not k.endswith("num_batches_tracked")})
    x = torch.randn(1, 3, 64, 64) * 50
    with torch.no_grad():
        a, b = folded.bottom_up(x)["res5"], unfolded.bottom_up(x)["res5"]
    assert (a - b).abs().max().item() <= 1e-4 * b.abs().max().item()


def test_detectron2_c4_checkpoint_into_plugin_c4(tmp_path):
    """detectron2's builtin R50-C4: backbone res2..res4 and roi_heads.res5 map to the plugin C4."""
    d2_cfg = detectron2_builtin_cfg("COCO-Detection/faster_rcnn_R_50_C4_1x.yaml")
    d2 = build_model(d2_cfg).eval()
    path = tmp_path / "model_final_c4.pth"
    torch.save({"model": d2.state_dict()}, path)
    model = build_model(plugin_cfg(
        "r50_c4_voc07.yaml",
        **{"MODEL.PLUGIN_RESNET.STRIDE_IN_1X1": True, "MODEL.ROI_HEADS.NUM_CLASSES": 80,
           "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 64, 128, 256, 512]],
           "MODEL.PIXEL_MEAN": [103.53, 116.28, 123.675], "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
           "INPUT.FORMAT": "BGR", "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2"})).eval()
    PluginCheckpointer(model).load(str(path))
    state = model.state_dict()
    assert torch.equal(state["roi_heads.res5.0.downsample.1.running_var"],
                       d2.state_dict()["roi_heads.res5.0.shortcut.norm.running_var"])
    x = torch.randn(1, 3, 64, 64) * 50
    with torch.no_grad():
        assert torch.equal(model.backbone(x)["res4"], d2.backbone(x)["res4"])
        boxes = torch.randn(8, 1024, 14, 14)
        assert torch.allclose(model.roi_heads.res5(boxes), d2.roi_heads.res5(boxes), atol=1e-5)


def test_own_checkpoint_roundtrip_and_class_count_change(tmp_path, caplog):
    model = _tv_model(18)
    path = tmp_path / "model_0000099.pth"
    torch.save({"model": model.state_dict()}, path)
    fresh = _tv_model(18)
    PluginCheckpointer(fresh).load(str(path))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    # Fine-tuning on another class count: only the predictor is left out, with a warning.
    other = _tv_model(18, **{"MODEL.ROI_HEADS.NUM_CLASSES": 20})
    with caplog.at_level(logging.WARNING):
        PluginCheckpointer(other).load(str(path))
    assert "Fine-tuning to another class count: the file's box predictor has 80 classes, the model's 20" in caplog.text
    # For prediction the same file is refused: the predictor would stay random.
    with pytest.raises(CheckpointMismatchError, match="box predictor has 80 classes, the model's 20"):
        PluginCheckpointer(_tv_model(18, **{"MODEL.ROI_HEADS.NUM_CLASSES": 20}), for_inference=True).load(str(path))
    # A checkpoint missing a backbone weight is an error, not a silent random init.
    broken = dict(model.state_dict())
    del broken["backbone.bottom_up.layer2.0.conv1.weight"]
    torch.save({"model": broken}, path)
    with pytest.raises(CheckpointMismatchError, match="layer2.0.conv1.weight"):
        PluginCheckpointer(_tv_model(18)).load(str(path))


# ----------------------------------------------------------------------------------------------
# Wrong files
# ----------------------------------------------------------------------------------------------
def test_other_depth_is_an_error(tmp_path):
    path = tmp_path / "resnet50.pth"
    save_torchvision_resnet(path, 50)
    with pytest.raises(CheckpointMismatchError, match=r"ResNet-50 \(Bottleneck.*ResNet-18.*DEPTH"):
        PluginCheckpointer(_tv_model(18)).load(str(path))
    path = tmp_path / "resnet34.pth"
    save_torchvision_resnet(path, 34)
    with pytest.raises(CheckpointMismatchError, match=r"ResNet-34.*ResNet-18"):
        PluginCheckpointer(_tv_model(18)).load(str(path))


def test_detectron2_checkpoint_of_other_depth_is_an_error(tmp_path):
    d2 = build_model(detectron2_builtin_cfg()).eval()
    path = tmp_path / "model_final_r50.pth"
    torch.save({"model": d2.state_dict()}, path)
    model = build_model(plugin_cfg("fpn_r101.yaml")).eval()
    with pytest.raises(CheckpointMismatchError, match=r"ResNet-50 .*ResNet-101"):
        PluginCheckpointer(model).load(str(path))


def test_detectron2_c4_checkpoint_into_fpn_is_an_error(tmp_path):
    d2 = build_model(detectron2_builtin_cfg("COCO-Detection/faster_rcnn_R_50_C4_1x.yaml"))
    path = tmp_path / "model_final_c4.pth"
    torch.save({"model": d2.state_dict()}, path)
    model = build_model(plugin_cfg("fpn_r50.yaml")).eval()
    with pytest.raises(CheckpointMismatchError,
                       match=r"ResNet is at 'backbone\.', but the model's is at 'backbone\.bottom_up\.'"):
        PluginCheckpointer(model).load(str(path))


def test_classifier_head_only_is_an_error(tmp_path):
    path = tmp_path / "fc_only.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, path)
    with pytest.raises(CheckpointMismatchError, match="only a classifier head"):
        PluginCheckpointer(_tv_model(50)).load(str(path))


def test_missing_tensor_in_torchvision_file_is_an_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = torchvision_resnet(18).state_dict()
    del state["layer3.1.bn2.running_var"]
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"lacks 1 weights.*layer3\.1\.bn2\.running_var"):
        PluginCheckpointer(_tv_model(18)).load(str(path))


def test_resnet_file_into_vgg_model_is_an_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    save_torchvision_resnet(path, 18)
    model = build_model(plugin_cfg("vgg16_voc07.yaml")).eval()
    with pytest.raises(CheckpointMismatchError, match="has no plugin ResNet"):
        PluginCheckpointer(model).load(str(path))


def test_vgg_file_into_resnet_model_is_an_error(tmp_path):
    import torchvision

    path = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="VGG16"):
        PluginCheckpointer(_tv_model(18)).load(str(path))


def test_unknown_and_detectron1_files_are_errors(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.blocks.0.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointMismatchError, match="no known format.*encoder.blocks.0.weight"):
        PluginCheckpointer(_tv_model(18)).load(str(path))
    pkl = tmp_path / "detectron1.pkl"
    tv = torchvision_resnet(50).state_dict()
    save_msra_pkl(pkl, tv)
    import pickle

    with open(pkl, "rb") as f:
        blobs = pickle.load(f)
    blobs["fpn_inner_res5_2_sum_w"] = blobs["conv1_w"]
    with open(pkl, "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    with pytest.raises(CheckpointMismatchError, match="fpn_inner_res5_2_sum_w"):
        PluginCheckpointer(build_model(plugin_cfg("fpn_r50.yaml"))).load(str(pkl))


# ----------------------------------------------------------------------------------------------
# Pixel format and stride placement
# ----------------------------------------------------------------------------------------------
def test_torchvision_weights_with_msra_config_is_an_error(tmp_path):
    path = tmp_path / "resnet50.pth"
    save_torchvision_resnet(path, 50)
    model = build_model(plugin_cfg("fpn_r50.yaml")).eval()
    with pytest.raises(PixelFormatMismatchError) as e:
        PluginCheckpointer(model).load(str(path))
    for text in ("INPUT.FORMAT is BGR, not RGB", "MODEL.PIXEL_STD", "STRIDE_IN_1X1 is True"):
        assert text in str(e.value)
    # "warn" loads anyway, with the same message in the log; "off" says nothing.
    PluginCheckpointer(model, format_check="warn").load(str(path))
    PluginCheckpointer(model, format_check="off").load(str(path))
    with pytest.raises(ValueError, match="FORMAT_CHECK"):
        PluginCheckpointer(model, format_check="maybe")


def test_msra_weights_with_torchvision_config_is_an_error(tmp_path):
    path = tmp_path / "R-50.pkl"
    save_msra_pkl(path, torchvision_resnet(50).state_dict())
    with pytest.raises(PixelFormatMismatchError, match=r"PIXEL_MEAN is \[123.675"):
        PluginCheckpointer(_tv_model(50)).load(str(path))
    # Detectron1's MSRA means are close enough to detectron2's.
    model = build_model(plugin_cfg("fpn_r50.yaml",
                                   **{"MODEL.PIXEL_MEAN": [102.98, 115.95, 122.77]}))
    PluginCheckpointer(model).load(str(path))


def test_detectron2_checkpoint_format_is_assumed_so_only_warned(tmp_path, caplog):
    d2 = build_model(detectron2_builtin_cfg()).eval()
    path = tmp_path / "model_final.pth"
    torch.save({"model": d2.state_dict()}, path)
    model = build_model(plugin_cfg("fpn_r50_torchvision.yaml"))
    with caplog.at_level(logging.WARNING):
        PluginCheckpointer(model).load(str(path))
    assert "is assumed to expect MSRA" in caplog.text
    # A checkpoint that recorded its pixel statistics is checked against them strictly.
    state = dict(d2.state_dict(), pixel_mean=d2.pixel_mean, pixel_std=d2.pixel_std)
    torch.save({"model": state}, path)
    with pytest.raises(PixelFormatMismatchError, match="PIXEL_MEAN"):
        PluginCheckpointer(model).load(str(path))


# ----------------------------------------------------------------------------------------------
# torchvision://NAME (never touches the network)
# ----------------------------------------------------------------------------------------------
def test_torchvision_name_resolution():
    name, url = torchvision_urls.resolve_torchvision_name("resnet50")
    assert name == "ResNet50_Weights.IMAGENET1K_V1" and url.endswith("/resnet50-0676ba61.pth")
    name, url = torchvision_urls.resolve_torchvision_name("resnet50.IMAGENET1K_V2")
    assert name == "ResNet50_Weights.IMAGENET1K_V2" and url != torchvision_urls.resolve_torchvision_name("resnet50")[1]
    assert torchvision_urls.resolve_torchvision_name("vgg16")[1].endswith("/vgg16-397923af.pth")
    for depth in (18, 34, 101, 152):
        assert f"resnet{depth}-" in torchvision_urls.resolve_torchvision_name(f"resnet{depth}")[1]
    name, url = torchvision_urls.resolve_torchvision_name("fasterrcnn_resnet50_fpn")
    assert name == "FasterRCNN_ResNet50_FPN_Weights.COCO_V1" and url.endswith("/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")
    assert torchvision_urls.resolve_torchvision_name("fasterrcnn_resnet50_fpn_v2")[1].endswith(
        "/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth")
    with pytest.raises(ValueError, match="no model 'resnet51'"):
        torchvision_urls.resolve_torchvision_name("resnet51")
    with pytest.raises(ValueError, match="no entry 'IMAGENET9K'"):
        torchvision_urls.resolve_torchvision_name("resnet50.IMAGENET9K")


def _offline(url, dst):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_torchvision_url_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision_urls, "_download", _offline)
    with pytest.raises(OSError) as e:
        PluginCheckpointer(_tv_model(18)).load("torchvision://resnet18")
    message = str(e.value)
    assert "Cannot fetch MODEL.WEIGHTS 'torchvision://resnet18' (ResNet18_Weights.IMAGENET1K_V1)" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "name resolution" in message


def test_torchvision_url_uses_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision_urls, "_download", _offline)
    _, url = torchvision_urls.resolve_torchvision_name("resnet18")
    cached = torchvision_urls.cache_path(url)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    file_state = save_torchvision_resnet(cached, 18)
    model = build_model(plugin_cfg("fpn_r18.yaml", "torchvision://resnet18"))
    PluginCheckpointer(model).load(model_weights := "torchvision://resnet18")
    assert model_weights.startswith("torchvision://")
    _assert_loaded(model.state_dict(), file_state, "backbone.bottom_up.")


def test_group_norm_model_takes_the_affine_part(tmp_path, caplog):
    """A GN model has no BN statistics: the BN scale/shift load, the statistics are reported unused."""
    path = tmp_path / "resnet18.pth"
    file_state = save_torchvision_resnet(path, 18)
    model = build_backbone(plugin_cfg("fpn_r18.yaml", **{"MODEL.PLUGIN_RESNET.NORM": "GN"}))
    with caplog.at_level(logging.INFO):
        PluginCheckpointer(model).load(str(path))
    state = model.state_dict()
    assert torch.equal(state["bottom_up.layer2.1.bn2.weight"], file_state["layer2.1.bn2.weight"])
    assert "does not use: bn1.running_mean, bn1.running_var" in caplog.text


def test_from_config_reads_format_check():
    cfg = plugin_cfg("fpn_r18.yaml", **{"MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK": "warn"})
    assert PluginCheckpointer.from_config(cfg, build_backbone(cfg)).format_check == "warn"
