"""benchmarks/bench_models.py: its --quick run as a smoke test, and its precision choice.

No timing is asserted (times belong to the benchmark's table); what is asserted is what the run
must get right on every machine: every architecture is there, each plugin model reproduces its
peer's fp32 detections (the weights really are shared), pairs count the same FLOPs and
parameters, and the reduced precision rows appear exactly where the CPU computes bf16 natively.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fpn_plugin import precision

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_models  # noqa: E402
import memory_peaks  # noqa: E402


@pytest.mark.parametrize("native", [True, False])
def test_bf16_rows_only_where_the_cpu_has_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    args = bench_models.parse_args(["--quick"])
    assert args.reduced == ("bf16" if native else None)
    if not native:
        assert "no native bf16" in args.reduced_why
    assert bench_models.parse_args(["--bf16", "off"]).reduced is None
    assert bench_models.parse_args(["--bf16", "on"]).reduced == "bf16"


def test_builtin_twin_changes_only_the_backbone_and_res5_head():
    cfg = bench_models.plugin_cfg("r50_c4_voc07.yaml", "cpu")
    twin = bench_models.builtin_twin_cfg(cfg)
    assert twin.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    assert twin.MODEL.ROI_HEADS.NAME == "Res5ROIHeads"
    assert (twin.MODEL.RESNETS.DEPTH, twin.MODEL.RESNETS.OUT_FEATURES) == (50, ["res4"])
    for key in ("RPN", "ANCHOR_GENERATOR", "ROI_BOX_HEAD"):
        assert twin.MODEL[key] == cfg.MODEL[key]
    assert twin.MODEL.ROI_HEADS.NUM_CLASSES == cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20
    assert bench_models.builtin_twin_cfg(bench_models.plugin_cfg("vgg16_voc07.yaml", "cpu")) is None
    r18 = bench_models.builtin_twin_cfg(bench_models.plugin_cfg("fpn_r18.yaml", "cpu"))
    assert r18.MODEL.RESNETS.RES2_OUT_CHANNELS == 64


@pytest.mark.parametrize("kernel_peak", [True, False], ids=["high-water mark", "sampled"])
def test_peak_memory_counts_a_block_freed_inside_the_call(monkeypatch, kernel_peak):
    """200 MiB touched and freed within the block: its peak, not what is left at its end nor
    an earlier, higher one."""
    import numpy as np

    if not kernel_peak:
        monkeypatch.setattr(memory_peaks, "_reset_peak_rss", lambda: False)
    elif not memory_peaks._reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here: the sampled branch measures")
    size = 200 << 20
    with memory_peaks.freed_memory_returned():
        np.ones(2 * size, dtype=np.uint8)  # freed at once: an earlier, higher peak, not this block's
        with memory_peaks.PeakMemory("cpu") as memory:
            block = np.ones(size, dtype=np.uint8)  # written: resident
            if not kernel_peak:
                time.sleep(0.05)  # a sampler sees only what lasts; the mark needs no wait
            del block  # over the mmap threshold: unmapped at once
    assert memory.kernel_peak is kernel_peak
    assert size - (1 << 20) <= memory.peak <= size + (32 << 20)  # other pages come and go


def test_tensor_peak_counts_what_the_call_frees_of_its_last_call():
    """A call that frees what the previous call kept (as a training step frees the last
    gradients), then holds 16 MiB at once: its peak above its start is 12 MiB, exactly."""
    mib = 1 << 20
    kept = {"grad": torch.ones(4 * mib // 4)}  # 4 MiB, from before any profiler

    def step():
        kept["grad"] = None  # the last call's gradient: freed
        scratch = torch.ones(8 * mib // 4)  # 8 MiB
        bigger = torch.ones(8 * mib // 4)  # 16 MiB live
        del scratch, bigger
        kept["grad"] = torch.ones(4 * mib // 4)

    peak = memory_peaks.tensor_peak(step)
    assert 12 * mib <= peak <= 12 * mib + (64 << 10)  # 16 MiB at once, 4 of them freed first


def test_tensor_peak_measures_a_call_that_keeps_nothing_in_one_run():
    """An inference call (it frees all it allocates) is measured at once: one call, its peak."""
    mib, calls = 1 << 20, []

    def infer():
        calls.append(1)
        features = torch.ones(8 * mib // 4)
        scores = torch.ones(4 * mib // 4)  # 12 MiB live
        del features, scores

    peak = memory_peaks.tensor_peak(infer, frees_last_calls=False)
    assert len(calls) == 1
    assert 12 * mib <= peak <= 12 * mib + (64 << 10)


def test_tensor_peak_hides_the_profilers_own_stderr_lines_only(capfd):
    """kineto's per-call profiler_start/stop lines do not reach stderr; stderr works after."""
    memory_peaks.tensor_peak(lambda: torch.ones(1024), frees_last_calls=False)
    os.write(2, b"after the profile\n")
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "profiler_stop" not in err
    assert err.endswith("after the profile\n")


def _table(output: str, title: str) -> list:
    """The rows (lists of cells) of the markdown table after the line starting with title."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 3:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_quick_run_prints_every_table():
    run = subprocess.run([sys.executable, "-W", "ignore", str(BENCHMARKS / "bench_models.py"), "--quick"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert re.search(r"^CPU: .+ cores; flags: ", out, re.M)
    assert re.search(r"^peak memory: resident memory above its level before each call: "
                     r"(the kernel's high-water mark|sampled every ms)", out, re.M)
    assert re.search(r"^torch \S+, \d+ threads; detectron2 ", out, re.M)

    inference = _table(out, "Inference, one 320x480 image")
    models = {(row[0], row[1]) for row in inference}
    assert {arch for arch, _ in models} == {"R18-FPN", "R50-FPN", "R50-C4", "VGG16"}
    assert ("R50-FPN", "torchvision fasterrcnn_resnet50_fpn") in models
    settings = {row[2] for row in inference if row[1].startswith("plugin")}
    expected = {"fp32", "fast"} | ({"bf16", "fast+bf16", "fast, all bf16"}
                                   if precision.cpu_has_native_bf16() else set())
    assert settings == expected
    verdicts = {row[1]: row[7] for row in inference if row[2] == "fp32" and row[7] != "reference"}
    assert len(verdicts) == 4  # R18-FPN, R50-FPN, its torchvision twin, R50-C4
    for name, verdict in verdicts.items():
        hits, total = map(int, re.match(r"(\d+)/(\d+) of", verdict).groups())
        # detectron2's pairs run the same ops; the torchvision twin has its own post-processing
        assert total > 0 and hits >= (0.95 * total if "tv_" in name else total), verdict
    assert all(float(row[3]) > 0 for row in inference)
    assert all(float(row[8]) > 0 for row in inference)  # tensor peak MB
    assert all(row[9] == "1.00x" for row in inference if row[1] == "detectron2 builtin" and row[2] == "fp32")

    training = _table(out, "Training step")
    assert {(row[0], row[1]) for row in training} == models
    assert all(row[7] == "reference" for row in training if row[2] == "fp32")
    assert all(float(row[8]) > 0 for row in training)  # tensor peak MB
    assert all(row[9] == "1.00x" for row in training if row[1] == "detectron2 builtin" and row[2] == "fp32")

    flops = {(row[0], row[1]): (row[2], row[3]) for row in _table(out, "Parameters and FLOPs")}
    assert set(flops) == models
    for arch in ("R18-FPN", "R50-FPN", "R50-C4"):
        assert flops[(arch, "detectron2 builtin")] == flops[(arch, f"plugin {bench_models.ARCHITECTURES[arch]}")]
    assert all(float(gflops) > 1 for _, gflops in flops.values())

    sizes = [row[0] for row in _table(out, "Inference s/image against the image size")]
    assert sizes == ["256x384", "384x576"]
