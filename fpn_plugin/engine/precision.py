"""Mixed precision for training: fp16 with loss scaling on CUDA, bf16 autocast on CPU.

detectron2 0.6's ``AMPTrainer`` asserts CUDA and only knows fp16; here the precision is an
object the training step asks for its autocast context, its backward and its optimizer step.
"""
import contextlib

import torch

from ..precision import choose_precision

__all__ = ["Precision", "resolve_precision"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(cfg, device: str) -> str:
    """Return "fp32", "fp16" or "bf16" from ``SOLVER.AMP`` for a resolved device.

    ``SOLVER.AMP.ENABLED False`` is fp32; otherwise ``SOLVER.AMP.PRECISION`` goes through the
    project's one policy (:func:`fpn_plugin.precision.choose_precision`).

    Raises:
        ValueError: a precision the device cannot train in, with the key to change.
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return "fp32"
    return choose_precision(cfg.SOLVER.AMP.PRECISION, device, setting="SOLVER.AMP.PRECISION").name


class Precision:
    """Autocast, backward and optimizer step for one precision on one device type.

    Args:
        name: "fp32", "fp16" or "bf16".
        device: the torch device the model is on.
    """

    def __init__(self, name: str, device: str):
        if name not in _DTYPES:
            raise ValueError(f"Unknown precision {name!r}; choose one of {sorted(_DTYPES)}.")
        self.name = name
        self.device_type = torch.device(device).type
        # fp16 underflows small gradients without loss scaling; bf16 has fp32's exponent range.
        self.grad_scaler = torch.amp.GradScaler(self.device_type) if name == "fp16" else None

    def autocast(self):
        """The context for the forward pass (and the loss computation)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=_DTYPES[self.name])

    def backward(self, loss: torch.Tensor) -> None:
        if self.grad_scaler is not None:
            loss = self.grad_scaler.scale(loss)
        loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the gradients; with fp16, a step with inf/NaN gradients is skipped."""
        if self.grad_scaler is None:
            optimizer.step()
        else:
            self.grad_scaler.step(optimizer)
            self.grad_scaler.update()

    def state_dict(self) -> dict:
        return {"grad_scaler": self.grad_scaler.state_dict()} if self.grad_scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
