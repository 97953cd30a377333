"""`make demo`'s pipeline (python -m fpn_plugin.demo), shortened: train, evaluate, draw."""
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_pipeline_trains_evaluates_and_draws(tmp_path):
    out = tmp_path / "demo"
    command = [
        sys.executable, "-m", "fpn_plugin.demo", "--output", str(out), "--num-vis", "2",
        "SOLVER.MAX_ITER", "12", "SOLVER.STEPS", "(8,)", "SOLVER.WARMUP_ITERS", "4",
        "TEST.EVAL_PERIOD", "12", "DATASETS.SHAPES.NUM_TRAIN", "8", "DATASETS.SHAPES.NUM_VAL", "4",
        "DATASETS.SHAPES.CACHE_DIR", str(tmp_path / "shapes"), "DATALOADER.NUM_WORKERS", "0",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.strip().splitlines()
    # The last lines say what was reached and where the outputs are.
    assert any(line.startswith("Demo done in") and "AP50" in line for line in lines[-6:])
    assert lines[-1].strip().startswith("predictions:") and str(out / "predictions") in lines[-1]
    assert (out / "model_final.pth").is_file()
    assert sorted(p.suffix for p in (out / "predictions").iterdir()) == [".jpg", ".jpg"]
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("bbox/AP50" in m for m in metrics)
    assert any(p.suffix == ".png" for p in (out / "plots").iterdir())
