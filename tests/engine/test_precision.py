"""Mixed precision: which precision a config means, and bf16 training on CPU."""
import math
import warnings

import pytest
import torch

from _tiny import register_synthetic, tiny_cfg

from fpn_plugin import precision
from fpn_plugin.engine import Trainer
from fpn_plugin.engine.precision import Precision, resolve_precision


def _cfg(tmp_path, **amp):
    cfg = tiny_cfg(str(tmp_path), "unused")
    cfg.SOLVER.AMP.ENABLED = amp.pop("ENABLED", True)
    for k, v in amp.items():
        setattr(cfg.SOLVER.AMP, k, v)
    return cfg


@pytest.mark.parametrize("native", [False, True])
def test_solver_amp_goes_through_the_precision_policy(tmp_path, monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision(_cfg(tmp_path, ENABLED=False), "cpu") == "fp32"
    assert resolve_precision(_cfg(tmp_path, ENABLED=False), "cuda") == "fp32"
    assert resolve_precision(_cfg(tmp_path), "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision(_cfg(tmp_path), "cuda") == "fp16"
    forced = _cfg(tmp_path, PRECISION="bf16")
    if native:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert resolve_precision(forced, "cpu") == "bf16"
    else:
        with pytest.warns(RuntimeWarning, match="oneDNN emulates it"):
            assert resolve_precision(forced, "cpu") == "bf16"


def test_fp16_on_cpu_and_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION 'fp16' needs CUDA, but the device is 'cpu'. Use 'bf16'"):
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
    # bf16 is forced (not "auto"), so this trains in bf16 on every CPU: natively or emulated,
    # which this host's real check decides, and the log says so.
    register_synthetic("precision_train", str(tmp_path / "data"), num_images=4)
    first_losses = {}
    for name in ("fp32", "bf16"):
        cfg = tiny_cfg(str(tmp_path / name), "precision_train", max_iter=3)
        cfg.SOLVER.AMP.ENABLED = name == "bf16"
        cfg.SOLVER.AMP.PRECISION = "bf16"
        torch.manual_seed(0)
        caplog.clear()
        with caplog.at_level("WARNING", logger="fpn_plugin.precision"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            trainer = Trainer(cfg)
        emulated = "oneDNN emulates it" in caplog.text
        assert emulated == (name == "bf16" and not precision.cpu_has_native_bf16())
        assert trainer.precision.name == name
        trainer.resume_or_load(resume=False)
        trainer.train()
        history = trainer.storage.history("total_loss").values()
        assert len(history) == 3 and all(math.isfinite(v) for v, _ in history)
        first_losses[name] = history[0][0]
    # Same weights and data at iteration 0: bf16's 8-bit mantissa moves the loss by ~1%.
    assert first_losses["bf16"] == pytest.approx(first_losses["fp32"], rel=0.05)


@pytest.mark.gpu
def test_auto_precision_trains_in_fp16_on_cuda(tmp_path):
    register_synthetic("precision_cuda", str(tmp_path / "data"), num_images=4)
    cfg = tiny_cfg(str(tmp_path / "out"), "precision_cuda", max_iter=3)
    cfg.MODEL.DEVICE = "cuda"
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AMP.PRECISION = "auto"
    trainer = Trainer(cfg)
    assert trainer.precision.name == "fp16" and trainer.precision.grad_scaler is not None
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.history("total_loss").values()
    assert len(history) == 3 and all(math.isfinite(v) for v, _ in history)
