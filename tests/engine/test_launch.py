"""Several training processes on CPU, with gloo (detectron2 0.6's launch is CUDA/NCCL only)."""
import json
import os
import subprocess
import sys

import pytest

from _tiny import tiny_cfg

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_two_gloo_processes_both_step_and_write_one_checkpoint(tmp_path):
    cfg = tiny_cfg(str(tmp_path / "out"), "launch_train", max_iter=3)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.SOLVER.IMS_PER_BATCH = 2  # one image per process
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.dump())
    record = tmp_path / "record.jsonl"
    env = dict(os.environ, FPN_TEST_DATASETS="launch_train", FPN_TEST_DATA_ROOT=str(tmp_path / "data"),
               FPN_TEST_RECORD=str(record))
    # The parent registers (writes) the images first: the two processes only read them.
    sys.path.insert(0, HERE)
    from _tiny import register_synthetic

    register_synthetic("launch_train", str(tmp_path / "data"))
    run = subprocess.run(
        [sys.executable, os.path.join(HERE, "train_driver.py"), "direct", "--num-gpus", "2",
         "--dist-url", "auto", "--config-file", str(config)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    finals = [json.loads((out / f"final_rank{r}.json").read_text()) for r in (0, 1)]
    for final in finals:
        assert (final["world_size"], final["start_iter"], final["iter"]) == (2, 0, 3)
        assert final["optimizer_states"] > 0  # SGD momentum buffers: the optimizer stepped
    # DistributedDataParallel kept the two copies of the model identical.
    assert finals[0]["weights_checksum"] == pytest.approx(finals[1]["weights_checksum"], rel=1e-9)
    steps = [json.loads(line) for line in open(record)]
    assert sorted((s["rank"], s["iter"]) for s in steps) == [(r, i) for r in (0, 1) for i in range(3)]
    # Only the main process writes checkpoints: one of each, no leftovers of a second writer.
    assert sorted(p.name for p in out.iterdir() if "model" in p.name) == ["model_0000001.pth", "model_final.pth"]
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert "World size: 2" in run.stdout
