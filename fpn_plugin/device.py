"""Which torch device ``MODEL.DEVICE`` means, with ``auto`` for "CUDA when present"."""
import torch

__all__ = ["resolve_device", "cpu_has_native_bf16"]


def resolve_device(device: str) -> str:
    """Return the device to use for a ``MODEL.DEVICE`` value.

    Args:
        device: ``"auto"`` (CUDA when ``torch.cuda.is_available()``, else CPU), or any torch
            device string such as ``"cpu"``, ``"cuda"`` or ``"cuda:1"``.

    Raises:
        ValueError: a CUDA device is asked for where torch sees none.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"MODEL.DEVICE is {device!r}, but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda}). Set MODEL.DEVICE to 'auto' or 'cpu'."
        )
    return device


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX), not emulated.

    Emulated bf16 is several to hundreds of times slower than fp32, so bf16 on the CPU is
    worth it only where this is True.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
