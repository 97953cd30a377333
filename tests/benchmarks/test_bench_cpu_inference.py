"""benchmarks/bench_cpu_inference.py end to end on a tiny model and image: its table's columns.

No time is asserted; what is: every setting has a row, its multiply-adds split by precision as
the setting computes (the int8 RPN conv moves work from fp32 to int8, the total stays), and its
compute floor and time / floor are printed.
"""
import re
import sys
from pathlib import Path

import pytest
import torch

from detectron2.modeling import build_model

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_cpu_inference  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("data", ["shared", "absent"])
def test_a_tiny_run_prints_multiply_adds_and_the_compute_floor(tmp_path, monkeypatch, capsys, data):
    from inference.conftest import tiny_cfg

    folder = Path(bench_cpu_inference.DEFAULT_DATA) if data == "shared" else tmp_path / "none"
    if data == "shared" and not (folder / "annotations" / "custom_val.json").is_file():
        pytest.skip(f"{folder} (../shared/data beside the repository) is absent in this clone")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    cfg = tiny_cfg()
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    settings = ["fp32", "fast", "fast+int8rpn"]
    code = bench_cpu_inference.main([
        "--config-file", str(config), "--weights", str(weights), "--settings", *settings,
        "--size", "64", "96", "--repeats", "1", "--match-images", "2",
        "--calibration-images", "1", "--bf16", "off", "--threads", "2", "--data", str(folder),
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^compute floor: .*\(fp32 \d+, bf16 (\d+|-), int8 \d+ G multiply-adds/s, "
                     r"2 threads\)", out, re.M)
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| R50-FPN") and len(cells) == 9:
            rows[cells[1]] = cells
    assert list(rows) == settings
    macs = {name: [float(v) for v in row[4].split("/")] for name, row in rows.items()}
    assert macs["fp32"] == macs["fast"] and macs["fp32"][0] > 0 and macs["fp32"][1:] == [0, 0]
    fp32, bf16, int8 = macs["fast+int8rpn"]
    assert int8 > 0 and bf16 == 0 and fp32 < macs["fp32"][0]
    assert fp32 + int8 == pytest.approx(macs["fp32"][0], abs=0.15)  # one decimal printed
    for name, row in rows.items():
        floor, ratio = re.fullmatch(r"(\d+\.\d+) \((\d+\.\d+)x\)", row[5]).groups()
        assert float(floor) > 0 and re.fullmatch(r"\d+\.\d+x", row[6])
        assert re.fullmatch(r"\d+", row[7])  # page-faulted MB per image
    assert rows["fp32"][8] == "reference" and re.fullmatch(r"\d+\.\d %", rows["fast"][8])
    assert "| page-faulted MB/image |" in out
    label = "trained: tiny.pth" if data == "shared" else "random weights: NOT valid"
    assert f"match rate ({label}, " in out
    total = int(re.search(r"match rate \(.*, (\d+) fp32 dets\)", out).group(1))
    summary = re.search(r"^  fp32 detections: (\d+), median score (\d\.\d\d), (\d+) at >= 0\.5$",
                        out, re.M)
    assert summary and int(summary.group(1)) == total >= int(summary.group(3))
    assert re.search(r"^lowest compute floor: (fp32|fast|fast\+int8rpn)'s arithmetic, \d+\.\d+x",
                     out, re.M)


def test_page_faults_count_freshly_mapped_memory():
    import mmap

    size = 64 << 20
    before = bench_cpu_inference.minor_page_faults()
    memory = mmap.mmap(-1, size)  # anonymous: the kernel maps each page at its first write
    memory.madvise(mmap.MADV_NOHUGEPAGE)  # base pages even where huge pages are "always"
    for offset in range(0, size, bench_cpu_inference.PAGE_BYTES):
        memory[offset] = 1
    faulted = (bench_cpu_inference.minor_page_faults() - before) * bench_cpu_inference.PAGE_BYTES
    memory.close()
    assert size <= faulted <= 1.1 * size


def test_the_fidelity_model_trains_the_same_on_every_run(tmp_path):
    """Unseeded, the loader's image order and flips made every run's match rate that of another
    model."""
    data = Path(bench_cpu_inference.DEFAULT_DATA)
    if not (data / "annotations" / "custom_train.json").is_file():
        pytest.skip(f"{data} (../shared/data beside the repository) is absent in this clone")
    cfg = bench_cpu_inference.small_facemask_cfg(str(data))
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 114  # a few seconds per run
    runs = []
    for k in range(2):
        torch.manual_seed(k)  # what came before must not matter
        config, weights = bench_cpu_inference.train_small_model(cfg, 3, tmp_path / str(k))
        assert config.is_file() and weights.parent == tmp_path / str(k)
        runs.append(torch.load(weights)["model"])
    assert runs[0].keys() == runs[1].keys()
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_the_plain_bf16_setting_runs_the_roi_align_fpn_plugin_builds_on_cpu():
    """predict.py's model: under bf16 autocast detectron2's ROIAlign rounds the boxes to bf16
    (88 % matched against 94 % with fpn_plugin's on the same weights)."""
    from detectron2.layers import ROIAlign
    from inference.conftest import tiny_cfg

    from fpn_plugin.modeling.roi_align import GatherROIAlign

    model = build_model(tiny_cfg()).eval()
    assert {type(p) for p in model.roi_heads.box_pooler.level_poolers} == {ROIAlign}
    plain, bf16 = bench_cpu_inference.SETTINGS["bf16"](model, [])
    assert bf16 is True and plain is not model
    assert {type(p) for p in plain.roi_heads.box_pooler.level_poolers} == {GatherROIAlign}
    assert {type(p) for p in model.roi_heads.box_pooler.level_poolers} == {ROIAlign}  # a copy
