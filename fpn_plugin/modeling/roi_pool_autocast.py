"""RoI max-pooling under CPU autocast: torchvision's ``roi_pool`` has no CPU autocast kernel.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (``predict.py --bf16``, bf16 training),
the VGG16 detector's ``ROIPool`` receives bf16 features and fp32 boxes, and torchvision 0.29's
CPU kernel stops with "input should have the same type as rois". torchvision registers an
autocast kernel for ``roi_align`` on CPU and for ``roi_pool`` only on CUDA; this module adds the
missing one, as torchvision's own ``roi_align`` does it: compute in fp32, return the input's
dtype. It is registered only where the installed torchvision lacks it (found by trying).
"""
import torch
import torchvision  # noqa: F401  (defines torch.ops.torchvision.roi_pool)

__all__ = ["register_roi_pool_autocast_cpu"]

_library = None  # must stay alive for the registration to last


def _roi_pool_in_fp32(input, rois, spatial_scale, pooled_height, pooled_width):
    with torch.autocast("cpu", enabled=False):
        output, argmax = torch.ops.torchvision.roi_pool(
            input.float(), rois.float(), spatial_scale, pooled_height, pooled_width
        )
    return output.to(input.dtype), argmax


def _autocast_fails() -> bool:
    features = torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16)
    rois = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]])
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ops.torchvision.roi_pool(features, rois, 1.0, 2, 2)
    except RuntimeError:
        return True
    return False


def register_roi_pool_autocast_cpu() -> bool:
    """Register the fp32 ``roi_pool`` kernel for CPU autocast where it is missing.

    Returns:
        True when it was registered by this call.
    """
    global _library
    if _library is not None or not _autocast_fails():
        return False
    _library = torch.library.Library("torchvision", "IMPL")
    _library.impl("roi_pool", _roi_pool_in_fp32, "AutocastCPU")
    return True


register_roi_pool_autocast_cpu()
