"""Mixed precision: which precision a config means, and bf16 training on CPU."""
import math

import pytest
import torch

from _tiny import register_synthetic, tiny_cfg

from fpn_plugin.engine import Trainer
from fpn_plugin.engine.precision import Precision, cpu_bf16_is_native, resolve_precision


def _cfg(tmp_path, **amp):
    cfg = tiny_cfg(str(tmp_path), "unused")
    cfg.SOLVER.AMP.ENABLED = amp.pop("ENABLED", True)
    for k, v in amp.items():
        setattr(cfg.SOLVER.AMP, k, v)
    return cfg


def test_auto_is_bf16_on_cpu_and_fp16_on_cuda(tmp_path):
    assert resolve_precision(_cfg(tmp_path, ENABLED=False), "cpu") == "fp32"
    assert resolve_precision(_cfg(tmp_path), "cpu") == "bf16"
    assert resolve_precision(_cfg(tmp_path), "cuda") == "fp16"
    assert resolve_precision(_cfg(tmp_path, PRECISION="bf16"), "cpu") == "bf16"


def test_fp16_on_cpu_and_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'fp16' needs CUDA, but MODEL.DEVICE resolves to 'cpu'. Use 'bf16'"):
        resolve_precision(_cfg(tmp_path, PRECISION="fp16"), "cpu")
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION is 'fp8'"):
        resolve_precision(_cfg(tmp_path, PRECISION="fp8"), "cpu")


def test_bf16_autocast_runs_matmuls_in_bf16_without_a_grad_scaler():
    p = Precision("bf16", "cpu")
    assert p.grad_scaler is None and p.state_dict() == {}
    layer = torch.nn.Linear(4, 4)
    with p.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32


@pytest.mark.slow
def test_bf16_training_on_cpu_has_finite_losses_close_to_fp32(tmp_path, caplog):
    register_synthetic("precision_train", str(tmp_path / "data"), num_images=4)
    first_losses = {}
    for name in ("fp32", "bf16"):
        cfg = tiny_cfg(str(tmp_path / name), "precision_train", max_iter=3)
        cfg.SOLVER.AMP.ENABLED = name == "bf16"
        torch.manual_seed(0)
        with caplog.at_level("WARNING", logger="fpn_plugin.engine.trainer"):
            trainer = Trainer(cfg)
        emulated = "is emulated and much slower than fp32" in caplog.text
        assert emulated == (name == "bf16" and not cpu_bf16_is_native())
        assert trainer.precision.name == name
        trainer.resume_or_load(resume=False)
        trainer.train()
        history = trainer.storage.history("total_loss").values()
        assert len(history) == 3 and all(math.isfinite(v) for v, _ in history)
        first_losses[name] = history[0][0]
    # Same weights and data at iteration 0: bf16's 8-bit mantissa moves the loss by ~1%.
    assert first_losses["bf16"] == pytest.approx(first_losses["fp32"], rel=0.05)
