"""benchmarks/compute_floor.py: multiply-adds counted per precision, peaks, the floor's arithmetic.

The counts are checked against hand-computed layer sizes and against each other: the fast
path's forms of one model do the same multiply-adds, only in other precisions. No rate is
asserted beyond being measured (rates belong to the benchmark's output).
"""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from detectron2.modeling import build_model

from fpn_plugin.inference.fast_cpu import Int8ConvReLU, optimize_for_cpu

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_cpu_inference  # noqa: E402
import compute_floor  # noqa: E402

# conv 3->8 3x3 on 10x12 (padded): 8*10*12 outputs of 3*9 terms; grouped strided 8->4: 4*5*6
# outputs of 4*9 terms; linear 120->5
TINY_MACS = 8 * 10 * 12 * 3 * 9 + 4 * 5 * 6 * 4 * 9 + 5 * 120


def _tiny_layers():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1, groups=2),
        nn.Flatten(), nn.Linear(120, 5),
    ).eval()


def test_count_macs_counts_each_layer_in_the_precision_it_computes():
    model = _tiny_layers()
    x = torch.randn(1, 3, 10, 12)
    fp32 = compute_floor.count_macs(model, lambda: model(x))
    assert fp32 == {"fp32": TINY_MACS, "bf16": 0, "int8": 0}

    def autocast_run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)

    assert compute_floor.count_macs(model, autocast_run) == {"fp32": 0, "bf16": TINY_MACS, "int8": 0}
    bf16_model = _tiny_layers().bfloat16()
    assert compute_floor.count_macs(bf16_model, lambda: bf16_model(x.bfloat16()))["bf16"] == TINY_MACS
    # twice the batch, twice the work; the hooks are gone afterwards
    assert compute_floor.count_macs(model, lambda: model(torch.randn(2, 3, 10, 12)))["fp32"] == 2 * TINY_MACS
    assert all(not m._forward_hooks for m in model.modules())


def test_count_macs_counts_the_int8_conv_as_int8_and_refuses_fp16():
    conv = nn.Conv2d(16, 16, 3, padding=1).eval()
    x = torch.randn(1, 16, 12, 20).relu()
    int8 = Int8ConvReLU(conv, (0.05, 0), (0.05, 0))
    macs = compute_floor.count_macs(int8, lambda: int8(x))
    assert macs == {"fp32": 0, "bf16": 0, "int8": 16 * 12 * 20 * 16 * 9}
    half = nn.Linear(4, 4).half()
    with pytest.raises(ValueError, match="float16, which has no peak rate"):
        compute_floor.count_macs(half, lambda: half(torch.randn(1, 4).half()))


def test_the_fast_paths_forms_of_a_model_count_the_same_multiply_adds(monkeypatch):
    from fpn_plugin import precision
    from inference.conftest import tiny_cfg

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # bf16 without a warning
    cfg = tiny_cfg()
    # Few enough proposals that every form keeps as many, so their box heads do the same work.
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    inputs = [{"image": torch.randint(0, 256, (3, 96, 128)).float(), "height": 96, "width": 128}]

    def count(m):
        return compute_floor.count_macs(m, lambda: m(inputs))

    plain, fast = count(model), count(optimize_for_cpu(model))
    mixed = count(optimize_for_cpu(model, bf16=True, int8_rpn=inputs))
    total = plain["fp32"]
    assert plain == fast == {"fp32": total, "bf16": 0, "int8": 0}
    assert sum(mixed.values()) == total
    # the int8 RPN conv: 3x3, FPN's 32 channels in and out, on every level's padded size
    conv = model.proposal_generator.rpn_head.conv
    with torch.no_grad():
        features = model.backbone(model.preprocess_image(inputs).tensor)
    pixels = sum(features[f].shape[-2] * features[f].shape[-1] for f in model.proposal_generator.in_features)
    assert mixed["int8"] == pixels * conv.out_channels * conv.in_channels * 9
    # fp32 is left to the RPN's 1x1 objectness and delta convs and the box predictor's two
    # linear layers (FC_DIM 64 in, per proposal)
    head = model.proposal_generator.rpn_head
    rpn_1x1 = pixels * conv.out_channels * (
        head.objectness_logits.out_channels + head.anchor_deltas.out_channels
    )
    predictor = model.roi_heads.box_predictor
    per_proposal = 64 * (predictor.cls_score.out_features + predictor.bbox_pred.out_features)
    assert mixed["fp32"] == rpn_1x1 + 50 * per_proposal
    assert mixed["bf16"] > 0.5 * total

@pytest.mark.parametrize("native", [True, False])
def test_peaks_are_measured_and_bf16_only_where_native(monkeypatch, native):
    monkeypatch.setattr(compute_floor, "cpu_has_native_bf16", lambda: native)
    peaks = compute_floor.measure_peaks(gemm=64, conv_hw=(6, 8), rounds=1)
    assert set(peaks) == set(compute_floor.PRECISIONS)
    assert peaks["fp32"] > 0 and peaks["int8"] > 0
    assert (peaks["bf16"] is not None and peaks["bf16"] > 0) if native else peaks["bf16"] is None
    text = compute_floor.peaks_text(peaks)
    assert text.startswith("fp32 ") and text.endswith(" G multiply-adds/s")
    assert ("bf16 -" in text) != native


def test_floor_is_each_precisions_work_at_its_peak():
    peaks = {"fp32": 1e9, "bf16": 2e9, "int8": None}
    assert compute_floor.floor_seconds({"fp32": 2e9, "bf16": 4e9, "int8": 0}, peaks) == 4.0
    assert compute_floor.floor_seconds({"fp32": 1e9, "bf16": 0, "int8": 1}, peaks) is None


def test_best_peaks_keep_each_precisions_highest_rate_and_flag_a_setting_below_its_floor():
    first = {"fp32": 82e9, "bf16": 229e9, "int8": 452e9}
    second = {"fp32": 110e9, "bf16": 220e9, "int8": None}
    assert compute_floor.best_peaks(first, second) == {"fp32": 110e9, "bf16": 229e9, "int8": 452e9}
    assert compute_floor.best_peaks({"fp32": 1e9, "bf16": None, "int8": 2e9})["bf16"] is None
    floors = {"fast": 2.34, "fast+bf16": 0.85, "tiny": None}
    times = {"fast": 2.20, "fast+bf16": 1.15, "tiny": 0.01}
    assert compute_floor.below_floor(times, floors) == ["fast"]


def test_every_benchmark_setting_is_counted_on_an_eager_twin_of_the_same_arithmetic():
    for name in bench_cpu_inference.SETTINGS:
        twin = bench_cpu_inference.arithmetic_twin(name)
        assert twin in bench_cpu_inference.SETTINGS and "compile" not in twin and twin != "onnxruntime"
        assert ("bf16" in twin) == ("bf16" in name) and ("int8" in twin) == ("int8" in name)
    assert bench_cpu_inference.arithmetic_twin("fast+bf16+compile+int8rpn") == "fast+bf16+int8rpn"
    assert bench_cpu_inference.arithmetic_twin("fast+compile-dyn") == "fast"
