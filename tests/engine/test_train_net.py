"""train_net.py end to end: --eval-only on a trained checkpoint, with fpn_plugin's evaluator."""
import os
import subprocess
import sys

import pytest

from _tiny import register_synthetic, tiny_cfg

from fpn_plugin.engine import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_eval_only_loads_the_weights_and_evaluates(tmp_path):
    data = str(tmp_path / "data")
    register_synthetic("evalonly_train", data)
    register_synthetic("evalonly_val", data)
    cfg = tiny_cfg(str(tmp_path / "out"), "evalonly_train", max_iter=2)
    cfg.DATASETS.TEST = ("evalonly_val",)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    weights = tmp_path / "out" / "model_final.pth"
    assert weights.is_file()
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.dump())

    env = dict(os.environ, FPN_TEST_DATASETS="evalonly_train,evalonly_val", FPN_TEST_DATA_ROOT=data)
    run = subprocess.run(
        [sys.executable, os.path.join(HERE, "train_driver.py"), "train_net", "--eval-only",
         "--config-file", str(config), "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "eval")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"[Checkpointer] Loading from {weights}" in run.stdout
    assert "Evaluation results for evalonly_val in csv format" in run.stdout
    assert "Starting training" not in run.stdout
