"""CPU fast path: exact norm folding, same detections, the Predictor/predict.py flag, bf16."""
import copy
import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import pairwise_iou

from fpn_plugin import precision
from fpn_plugin.inference import Predictor
from fpn_plugin.inference import fast_cpu
from fpn_plugin.inference.fast_cpu import (
    FastBackbone, FastHead, fold_batch_norms, fold_conv_norm, optimize_for_cpu,
)
from fpn_plugin.inference.predict_cli import main
from fpn_plugin.modeling.resnet_blocks import make_resnet_stage

from .conftest import tiny_cfg


def _random_frozen_bn(channels, generator):
    norm = FrozenBatchNorm2d(channels)
    norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
    norm.bias.copy_(torch.randn(channels, generator=generator))
    norm.running_mean.copy_(torch.randn(channels, generator=generator))
    norm.running_var.copy_(torch.rand(channels, generator=generator) * 4 + 0.1)
    return norm


@pytest.mark.parametrize("bias", [False, True])
def test_folding_frozen_bn_into_a_conv_is_exact_up_to_fp32_rounding(bias):
    g = torch.Generator().manual_seed(0)
    norm = _random_frozen_bn(16, g)
    conv = Conv2d(8, 16, 3, padding=1, bias=bias, norm=norm)
    x = torch.randn(2, 8, 20, 24, generator=g)
    with torch.no_grad():
        before = conv(x)
        fold_batch_norms(conv)
        after = conv(x)
    assert conv.norm is None and conv.bias is not None
    # fp32 rounding of a 72-term sum scaled by up to ~4: far below 1e-4 of values of order 10.
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-4)
    assert before.abs().max() > 1  # a non-trivial output


@pytest.mark.parametrize("kind", ["frozen_eps_1e-3", "batchnorm_without_affine"])
def test_folding_keeps_the_norms_eps_and_a_missing_affine(kind):
    # Variances near eps: folding with another eps (or without it) would be off by far more
    # than fp32 rounding. A BatchNorm2d(affine=False) has no weight or bias: ones and zeros.
    g = torch.Generator().manual_seed(7)
    if kind == "frozen_eps_1e-3":
        norm = _random_frozen_bn(16, g)
        norm.eps = 1e-3
    else:
        norm = nn.BatchNorm2d(16, affine=False).eval()
        norm.running_mean.copy_(torch.randn(16, generator=g))
    norm.running_var.copy_(torch.rand(16, generator=g) * 2e-3)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    x = torch.randn(2, 8, 12, 12, generator=g)
    with torch.no_grad():
        before = norm(conv(x))
        fold_conv_norm(conv, norm)
        after = conv(x)
    assert conv.bias is not None and not conv.bias.requires_grad
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-3)
    assert before.abs().max() > 10  # the near-eps variances make the output large


def test_folding_eval_batchnorm_in_a_sequential_and_in_torchvision_style_blocks():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    stage = make_resnet_stage(18, 2, norm="BN", stride_in_1x1=False).eval()
    for m in stage.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, as after training
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    x = torch.randn(1, 64, 32, 32, generator=g)
    with torch.no_grad():
        before = stage(x)
        folded = fold_batch_norms(stage)
        after = stage(x)
    norms_left = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    assert folded == 5 and norms_left == []  # 2 blocks x 2 convs + the downsample branch
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_folding_refuses_training_mode_and_mismatched_channels():
    with pytest.raises(ValueError, match="training mode"):
        fold_conv_norm(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4).train())
    with pytest.raises(ValueError, match="the norm has 5 channels but the conv has 4 outputs"):
        fold_conv_norm(nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(5))
    with pytest.raises(TypeError, match="cannot fold GroupNorm"):
        fold_conv_norm(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))


def _tiny_model(cfg=None):
    torch.manual_seed(0)
    model = build_model(cfg or tiny_cfg()).eval()
    g = torch.Generator().manual_seed(2)
    for m in model.modules():  # FrozenBN statistics as a trained model has them
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _inputs():
    g = torch.Generator().manual_seed(3)
    return [
        {"image": torch.randint(0, 256, (3, 96, 128), generator=g).float(), "height": 96,
         "width": 128},
        {"image": torch.randint(0, 256, (3, 90, 150), generator=g).float(), "height": 180,
         "width": 300},
    ]


def _assert_same_detections(a, b, box_atol=1e-2):
    assert len(a) == len(b) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=box_atol)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "options",
    [{}, {"channels_last": False}, {"channels_last": False, "fold_bn": False}],
)
def test_fast_model_gives_the_plain_models_detections(options):
    model = _tiny_model()
    fast = optimize_for_cpu(model, **options)
    assert isinstance(fast.backbone, FastBackbone) and not isinstance(model.backbone, FastBackbone)
    folded = options.get("fold_bn", True)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in fast.modules()) != folded
    assert fast.backbone.size_divisibility == model.backbone.size_divisibility
    assert fast.backbone.output_shape() == model.backbone.output_shape()
    with torch.no_grad():
        plain_out, fast_out = model(_inputs()), fast(_inputs())
    for a, b in zip(plain_out, fast_out):  # a batch of two sizes, one rescaled to its original
        _assert_same_detections(a["instances"], b["instances"])


@pytest.mark.parametrize("option", ["fp32", "int8_rpn"])
def test_a_fast_model_survives_deepcopy(option):
    options = {} if option == "fp32" else {"int8_rpn": _inputs()}
    fast = optimize_for_cpu(_tiny_model(), **options)
    copied = copy.deepcopy(fast)  # e.g. by ProposalsOnly users or evaluation code
    assert copied.backbone._out_features == fast.backbone._out_features  # answered by the original
    with torch.no_grad():
        for a, b in zip(fast(_inputs()), copied(_inputs())):
            _assert_same_detections(a["instances"], b["instances"])


@pytest.mark.slow
def test_compiled_fast_model_gives_the_plain_models_detections():
    # Inductor compiles at the first forward: the slowest test here (~20-40 s on 2 cores without
    # inductor's on-disk cache), so one static compilation for the batch's padded size only.
    model = _tiny_model()
    fast = optimize_for_cpu(model, compile="static")
    assert isinstance(fast.backbone.body, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(fast.proposal_generator.rpn_head, torch._dynamo.eval_frame.OptimizedModule)
    with torch.no_grad():
        plain_out, fast_out = model(_inputs()), fast(_inputs())
    for a, b in zip(plain_out, fast_out):
        _assert_same_detections(a["instances"], b["instances"])


def test_compile_options_are_checked():
    model = _tiny_model()
    with pytest.raises(ValueError, match="compile must be False, True, 'static' or 'dynamic'"):
        optimize_for_cpu(model, compile="fast")
    for option in (True, "dynamic"):  # compiles lazily: nothing runs here
        fast = optimize_for_cpu(model, compile=option)
        assert isinstance(fast.backbone.body, torch._dynamo.eval_frame.OptimizedModule)


def test_int8_conv_relu_is_close_to_the_fp32_conv():
    g = torch.Generator().manual_seed(6)
    conv = Conv2d(32, 32, 3, padding=1, activation=nn.ReLU()).eval()
    x = torch.randn(1, 32, 24, 40, generator=g).relu()  # features after a ReLU, like FPN's
    with torch.no_grad():
        reference = conv(x)
        from torch.ao.quantization.observer import HistogramObserver
        observers = [HistogramObserver(quant_min=0, quant_max=127) for _ in range(2)]
        observers[0](x), observers[1](reference)
        int8 = fast_cpu.Int8ConvReLU(conv, *(o.calculate_qparams() for o in observers))
        out = int8(x)
    assert out.dtype == torch.float32 and out.shape == reference.shape and out.min() >= 0
    # 7-bit activations and 8-bit weights: a few percent of the output's norm, not more.
    relative = (out - reference).norm() / reference.norm()
    assert 0 < relative < 0.05


def test_int8_rpn_keeps_the_rpn_outputs_close_and_detects():
    model = _tiny_model()
    fast = optimize_for_cpu(model)
    int8 = optimize_for_cpu(model, int8_rpn=_inputs())  # calibrated on the images it is run on
    assert isinstance(int8.proposal_generator.rpn_head.conv, fast_cpu.Int8ConvReLU)
    with torch.no_grad():
        images = fast.preprocess_image(_inputs())
        features = fast.backbone(images.tensor)
        levels = [features[f] for f in fast.proposal_generator.in_features]
        for fp32_out, int8_out in zip(
            fast.proposal_generator.rpn_head(levels), int8.proposal_generator.rpn_head(levels)
        ):  # objectness logits and anchor deltas, per level
            for a, b in zip(fp32_out, int8_out):
                assert (b - a).norm() / a.norm() < 0.05
        out = int8(_inputs())
    assert all(len(o["instances"]) > 0 for o in out)


def test_int8_rpn_options_are_checked():
    model = _tiny_model()
    with pytest.raises(ValueError, match="int8_rpn needs calibration inputs"):
        optimize_for_cpu(model, int8_rpn=[])


def test_optimize_refuses_a_training_model_and_a_second_pass():
    model = _tiny_model()
    with pytest.raises(ValueError, match="needs an eval-mode model"):
        optimize_for_cpu(model.train())
    fast = optimize_for_cpu(model.eval())
    with pytest.raises(ValueError, match="already optimized"):
        optimize_for_cpu(fast)
    with pytest.raises(ValueError, match="bf16 must be True, False or 'auto'"):
        optimize_for_cpu(model, bf16="yes")


def test_predictor_fast_cpu_gives_the_same_detections(tiny_detector):
    cfg, _ = tiny_detector
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (120, 150, 3), dtype=np.uint8) for _ in range(2)]
    fast = Predictor(cfg, batch_size=2, fast_cpu=True)
    assert isinstance(fast.model.backbone, FastBackbone)
    plain_out = Predictor(cfg, batch_size=2).predict(images, "RGB")
    for a, b in zip(plain_out, fast.predict(images, "RGB")):
        _assert_same_detections(a["instances"], b["instances"])


def test_predictor_fast_cpu_refuses_fp16(tiny_detector):
    cfg, _ = tiny_detector
    with pytest.raises(ValueError, match="Predictor precision 'fp16' needs CUDA, but the device is 'cpu'"):
        Predictor(cfg, precision="fp16", fast_cpu=True)


def _write_images(folder, seed, count=2):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 256, (100, 140, 3), dtype=np.uint8))
    return sorted(folder.iterdir())


def test_predict_py_fast_cpu_writes_the_same_predictions(tiny_detector, tmp_path):
    cfg, _ = tiny_detector
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    folder = tmp_path / "images"
    _write_images(folder, seed=5)
    results = {}
    for flag in ([], ["--fast-cpu"]):
        out = tmp_path / ("fast" if flag else "plain")
        code = main(["--config-file", str(config), "--input", str(folder), "--output", str(out),
                     "--no-vis", "--score-threshold", "0", "--device", "cpu", *flag])
        assert code == 0
        results[bool(flag)] = json.loads((out / "predictions.json").read_text())
    plain, fast = results[False], results[True]
    assert len(plain) == len(fast) > 0
    for a, b in zip(plain, fast):
        assert (a["file_name"], a["category_id"]) == (b["file_name"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-2)


def test_int8_rpn_from_predict_py_and_the_predictor_is_the_same_calibrated_model(
    tiny_detector, tmp_path
):
    cfg, _ = tiny_detector
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    images = _write_images(tmp_path / "images", seed=5)
    calibration = _write_images(tmp_path / "calibration", seed=6)
    predictor = Predictor(cfg, fast_cpu=True, int8_rpn_images=calibration)
    conv = predictor.model.proposal_generator.rpn_head.conv
    assert isinstance(conv, fast_cpu.Int8ConvReLU)
    # Calibrated on the images resized as the Predictor resizes what it predicts.
    plain = Predictor(cfg)
    inputs = [plain.model_input(cv2.imread(str(f))[:, :, ::-1]) for f in calibration]
    reference = optimize_for_cpu(plain.model, int8_rpn=inputs).proposal_generator.rpn_head.conv
    assert (conv.input_scale, conv.qconv.scale) == (reference.input_scale, reference.qconv.scale)
    out = tmp_path / "out"
    code = main(["--config-file", str(config), "--input", str(tmp_path / "images"), "--output",
                 str(out), "--no-vis", "--score-threshold", "0", "--device", "cpu", "--fast-cpu",
                 "--int8-rpn", str(tmp_path / "calibration")])
    assert code == 0
    written = json.loads((out / "predictions.json").read_text())
    expected = [[x0, y0, x1 - x0, y1 - y0] for o in predictor.predict([str(f) for f in images])
                for x0, y0, x1, y1 in o["instances"].pred_boxes.tensor.tolist()]  # XYWH, as written
    assert len(written) == len(expected) > 0
    np.testing.assert_allclose([d["bbox"] for d in written], expected, atol=1e-3)


def test_int8_rpn_without_the_fast_path_or_images_is_refused(tiny_detector, tmp_path, capsys):
    cfg, _ = tiny_detector
    calibration = _write_images(tmp_path / "calibration", seed=6, count=1)
    with pytest.raises(ValueError, match="int8_rpn_images is a step of the CPU fast path"):
        Predictor(cfg, int8_rpn_images=calibration)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    (tmp_path / "empty").mkdir()
    common = ["--config-file", str(config), "--input", str(calibration[0]), "--output",
              str(tmp_path / "out"), "--no-vis", "--device", "cpu"]
    for extra, message in (
        (["--int8-rpn", str(calibration[0])], "give fast_cpu=True too"),
        (["--fast-cpu", "--int8-rpn", str(tmp_path / "empty")],
         "--int8-rpn needs calibration images; unusable: " + str(tmp_path / "empty")),
        (["--fast-cpu", "--int8-rpn", str(tmp_path / "missing.png")], "missing.png"),
    ):
        assert main(common + extra) == 2
        assert message in capsys.readouterr().err


def test_the_default_is_fp32_on_every_cpu(monkeypatch):
    # The default must not change detections beyond fp32 rounding, whatever the CPU has.
    for native in (False, True):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
        assert not optimize_for_cpu(_tiny_model()).backbone.bf16


def test_bf16_on_a_cpu_without_native_bf16_warns_and_auto_keeps_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    model = _tiny_model()
    with pytest.warns(RuntimeWarning, match="oneDNN emulates it, far slower than fp32"):
        forced = optimize_for_cpu(model, bf16=True)
    assert forced.backbone.bf16 and forced.backbone.body is forced.backbone.original  # eager
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        auto = optimize_for_cpu(model, bf16="auto")
    assert not auto.backbone.bf16
    # bf16 features come back as fp32 for the heads, and the model still detects.
    with torch.no_grad():
        out = forced(_inputs())
    instances = out[0]["instances"]
    assert instances.pred_boxes.tensor.dtype == torch.float32 and len(instances) > 0


def _tiny_c4_model():
    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    cfg.MODEL.RPN.IN_FEATURES = ["res4"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128]]
    cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
    return _tiny_model(cfg)


def test_c4_fast_path_runs_res5_nhwc_with_the_same_detections():
    model = _tiny_c4_model()
    fast = optimize_for_cpu(model)
    res5 = fast.roi_heads.res5
    assert isinstance(res5, FastHead) and res5.channels_last and not res5.bf16
    assert not isinstance(fast.roi_heads.box_predictor, FastHead)  # fp32 path: nothing else
    with torch.no_grad():
        for a, b in zip(model(_inputs()), fast(_inputs())):
            # fp32 rounding through folded norms and the deeper res5 of random weights: seen
            # 1.05e-2 px (relative 9e-5) on a box of ~120 px
            _assert_same_detections(a["instances"], b["instances"], box_atol=5e-2)


@pytest.mark.parametrize("make_model", [_tiny_model, _tiny_c4_model], ids=["fpn", "c4"])
def test_bf16_runs_the_heads_heavy_parts_in_bf16_and_returns_fp32(monkeypatch, make_model):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    model = make_model()
    fast = optimize_for_cpu(model, bf16=True)
    heavy = [fast.proposal_generator.rpn_head.conv]
    heavy.append(fast.roi_heads.res5 if hasattr(model.roi_heads, "res5") else fast.roi_heads.box_head)
    assert all(isinstance(h, FastHead) and h.bf16 for h in heavy)
    originals = [model.proposal_generator.rpn_head.conv]  # fp32, unoptimized
    originals.append(model.roi_heads.res5 if hasattr(model.roi_heads, "res5") else model.roi_heads.box_head)
    for module in (*heavy, fast.backbone):  # weights kept in bf16: autocast casts nothing
        layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert layers and all(p.dtype == torch.bfloat16 for m in layers for p in m.parameters())
    inner, last = {}, {}  # per heavy module: the dtype it computes in; its last (input, output)
    for i, h in enumerate(heavy):
        h.module.register_forward_hook(lambda m, args, o, i=i: inner.__setitem__(i, o.dtype))
        h.register_forward_hook(lambda m, args, o, i=i: last.__setitem__(i, (args[0], o)))
    with torch.no_grad():
        out = fast(_inputs())
        for i, h in enumerate(heavy):  # the wrapper's output against its module run in fp32
            x, y = last[i]
            assert inner[i] == torch.bfloat16 and y.dtype == torch.float32
            reference = originals[i](x.float())  # the box head reads bf16 rows
            error = ((y - reference).norm() / reference.norm()).item()
            assert 0 < error < 2e-2, f"{type(h.module).__name__}: relative error {error:.1e}"
    instances = out[0]["instances"]
    assert instances.pred_boxes.tensor.dtype == torch.float32 and len(instances) > 0
    backbone_only = optimize_for_cpu(model, bf16=True, bf16_heads=False)
    assert backbone_only.backbone.bf16
    assert not isinstance(backbone_only.proposal_generator.rpn_head.conv, FastHead)


def test_bf16_auto_is_used_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fast = optimize_for_cpu(_tiny_model(), bf16="auto")
    assert fast.backbone.bf16


def test_bf16_auto_on_this_host_follows_the_real_check():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "auto" never picks emulated bf16
        fast = optimize_for_cpu(_tiny_model(), bf16="auto")
    assert fast.backbone.bf16 == precision.cpu_has_native_bf16()


def test_compile_with_bf16_compiles_the_autocast_regions_and_auto_follows_the_cpu(monkeypatch):
    model = _tiny_model()
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    for option in (True, "auto"):  # compiles lazily: nothing runs here
        fast = optimize_for_cpu(model, bf16=option, compile="static")
        assert fast.backbone.bf16 and fast.backbone.body is not fast.backbone.original
        rpn_head = fast.proposal_generator.rpn_head
        assert isinstance(rpn_head, torch._dynamo.eval_frame.OptimizedModule)
        assert isinstance(rpn_head.conv, FastHead) and rpn_head.conv.bf16  # compiled with it
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    fast = optimize_for_cpu(model, bf16="auto", compile="static")  # "auto" is fp32 here
    assert not fast.backbone.bf16 and fast.backbone.body is not fast.backbone.original
    assert not isinstance(fast.proposal_generator.rpn_head.conv, FastHead)


@pytest.mark.slow
def test_compiled_bf16_fast_model_gives_the_eager_bf16_detections(monkeypatch):
    # Compiles the backbone and RPN head in bf16 (~30-60 s on 2 cores): one static size.
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    model = _tiny_model()
    eager = optimize_for_cpu(model, bf16=True)
    compiled = optimize_for_cpu(model, bf16=True, compile="static")
    with torch.no_grad():
        images = eager.preprocess_image(_inputs()).tensor
        eager_features, compiled_features = eager.backbone(images), compiled.backbone(images)
        eager_out, compiled_out = eager(_inputs()), compiled(_inputs())
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as FastBackbone calls it
            raw = compiled.backbone.body(images.contiguous(memory_format=torch.channels_last))
    assert all(v.dtype == torch.bfloat16 for v in raw.values())  # not fp32 in disguise
    for name, a in eager_features.items():
        b = compiled_features[name]
        assert a.dtype == b.dtype == torch.float32
        # Equal on a Zen 4; elsewhere inductor may fuse a conv's add and round once instead.
        assert (b - a).norm() / a.norm() < 2e-2, name
    for a, b in zip(eager_out, compiled_out):
        a, b = a["instances"], b["instances"]
        iou = pairwise_iou(a.pred_boxes, b.pred_boxes)
        iou[a.pred_classes[:, None] != b.pred_classes[None, :]] = 0
        assert len(a) > 0 and (iou.max(dim=1).values >= 0.9).float().mean() >= 0.9


@pytest.mark.parametrize("vnni", [False, True])
def test_int8_rpn_activations_use_8_bits_only_with_vnni(monkeypatch, vnni):
    monkeypatch.setattr(precision, "cpu_has_vnni", lambda: vnni)
    assert precision.int8_activation_quant_max() == (255 if vnni else 127)
    model = _tiny_model()
    conv = optimize_for_cpu(model, int8_rpn=_inputs()).proposal_generator.rpn_head.conv
    monkeypatch.setattr(precision, "cpu_has_vnni", lambda: not vnni)
    other = optimize_for_cpu(model, int8_rpn=_inputs()).proposal_generator.rpn_head.conv
    # The same calibration data spread over 255 levels instead of 127: about half the step.
    ratio = conv.input_scale / other.input_scale
    assert (0.4 < ratio < 0.6) if vnni else (1.6 < ratio < 2.6), ratio


def test_int8_rpn_with_bf16_keeps_the_int8_conv_and_runs_the_rest_in_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    model = _tiny_model()
    fast = optimize_for_cpu(model, bf16=True, int8_rpn=_inputs())
    assert isinstance(fast.proposal_generator.rpn_head.conv, fast_cpu.Int8ConvReLU)
    assert fast.backbone.bf16 and isinstance(fast.roi_heads.box_head, FastHead)
    assert fast.roi_heads.box_head.bf16
    with torch.no_grad():
        out = fast(_inputs())
    assert all(len(o["instances"]) > 0 for o in out)


def test_fast_cpu_on_a_gpu_device_is_refused(tiny_detector):
    cfg, _ = tiny_detector
    predictor = Predictor(cfg)  # this machine may have no GPU: ask the check itself
    predictor.cfg.MODEL.DEVICE = "cuda:0"
    with pytest.raises(ValueError, match="fast_cpu is for MODEL.DEVICE cpu, got 'cuda:0'"):
        predictor._make_fast()


def test_weights_stored_in_bf16_compute_what_autocast_computes():
    from fpn_plugin.inference.fast_cpu.wrappers import store_weights_in_bf16

    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.GroupNorm(2, 8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 36, 5),
    ).eval()
    x = torch.randn(3, 4, 6, 6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = module(x)
        assert store_weights_in_bf16(module) == 2
        got = module(x)
    assert module[0].weight.dtype == module[4].weight.dtype == module[4].bias.dtype == torch.bfloat16
    assert module[0].bias is None and module[1].weight.dtype == torch.float32  # the norm: as it was
    assert not any(p.requires_grad for p in module.parameters() if p.dtype == torch.bfloat16)
    assert torch.equal(got, expected)
