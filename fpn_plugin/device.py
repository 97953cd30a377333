"""Which torch device ``MODEL.DEVICE`` means, with ``auto`` for "CUDA when present".

(Which precision a device runs in is :mod:`fpn_plugin.precision`'s rule.)
"""
import torch

__all__ = ["resolve_device"]


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

