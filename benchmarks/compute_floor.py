"""A model's compute floor on this CPU: its multiply-adds by precision at the CPU's measured peaks.

:func:`count_macs` counts, with a forward hook on every convolution and linear layer, each
layer's multiply-adds (from its output's shape) in the precision it computes: int8 for torch's
quantized convolutions, bf16 with bf16 inputs or under CPU bf16 autocast, fp32 otherwise.
:func:`measure_peaks` measures what this CPU sustains in each precision with the threads in
use: the best of a square matrix product and a 3x3 256->256 NHWC convolution (fp32, bf16) or
torch's quantized convolution (int8: the op the fast path's int8 RPN conv runs). The floor is
the time those multiply-adds take at those peaks, everything else (ROIAlign, NMS, copies)
counted as free: no form of the same arithmetic runs faster here, so time / floor says how far
a setting is from this CPU's limit, and floor / reference the best ratio any such setting can
reach.
"""
import time
from typing import Callable, Dict, Optional

import torch
from torch import nn

from fpn_plugin.precision import cpu_has_native_bf16

__all__ = ["count_macs", "measure_peaks", "floor_seconds", "peaks_text", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16", "int8")


def _quantized_conv_type():
    from torch.ao.nn.quantized import Conv2d as QuantizedConv2d

    return QuantizedConv2d  # its fused ConvReLU2d is a subclass


def _layer_precision(x) -> str:
    if getattr(x, "is_quantized", False):
        return "int8"
    if x.dtype == torch.bfloat16:
        return "bf16"
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return "bf16"
    if x.dtype == torch.float32:
        return "fp32"
    raise ValueError(f"count_macs: a layer computed in {x.dtype}, which has no peak rate here")


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kh, kw = module.kernel_size  # a pair in torch's float and quantized convolutions
    return output.numel() * (module.in_channels // module.groups) * kh * kw


@torch.no_grad()
def count_macs(model: nn.Module, run: Callable[[], object]) -> Dict[str, int]:
    """Multiply-adds per precision of the convolutions and linear layers ``run()`` calls.

    Args:
        model: whose layers are hooked (eager modules: a compiled graph calls no hooks).
        run: runs one forward of ``model`` (with whatever autocast the setting uses).

    Returns:
        {"fp32": n, "bf16": n, "int8": n}.
    """
    layer_types = (nn.Conv2d, nn.Linear, _quantized_conv_type())
    macs = dict.fromkeys(PRECISIONS, 0)

    def hook(module, args, output):
        macs[_layer_precision(args[0])] += _layer_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layer_types)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return macs


def _best_rate(fn: Callable[[], object], macs: int, rounds: int) -> float:
    """Multiply-adds per second of ``fn``: its fastest of ``rounds`` timed calls after a warm-up."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return macs / min(times)


@torch.no_grad()
def measure_peaks(gemm: int = 2048, conv_hw=(100, 152), rounds: int = 5) -> Dict[str, Optional[float]]:
    """This CPU's sustained multiply-adds per second in fp32, bf16 and int8 (torch's threads).

    bf16 is None on a CPU without native bf16 (it is emulated there, hundreds of times slower,
    and the fast path does not use it: timing it would take minutes and say nothing).
    """
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(gemm, gemm, generator=g), torch.randn(gemm, gemm, generator=g)
    conv = nn.Conv2d(256, 256, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 256, *conv_hw, generator=g).contiguous(memory_format=torch.channels_last)
    conv_macs = x.numel() * 256 * 9
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and not cpu_has_native_bf16():
            peaks[name] = None
            continue
        a_, b_, conv_, x_ = a.to(dtype), b.to(dtype), conv.to(dtype), x.to(dtype)
        peaks[name] = max(_best_rate(lambda: a_ @ b_, gemm ** 3, rounds),
                          _best_rate(lambda: conv_(x_), conv_macs, rounds))
    conv.float()
    qconv = _quantized_conv_type()(256, 256, 3, padding=1)
    weight = conv.weight.detach()
    scales = weight.abs().amax(dim=(1, 2, 3)) / 127
    qconv.set_weight_bias(
        torch.quantize_per_channel(weight, scales, torch.zeros(256, dtype=torch.long), 0, torch.qint8),
        conv.bias.detach(),
    )
    qconv.scale, qconv.zero_point = 0.05, 0
    qx = torch.quantize_per_tensor(x.relu(), 0.02, 0, torch.quint8)
    peaks["int8"] = _best_rate(lambda: qconv(qx), conv_macs, rounds)
    return peaks


def best_peaks(*measurements: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
    """Each precision's highest rate over several :func:`measure_peaks` (None where never
    measured): a peak is what the CPU can do, and a moment of contention only lowers it."""
    return {
        p: max((m[p] for m in measurements if m.get(p) is not None), default=None)
        for p in PRECISIONS
    }


def below_floor(times: Dict[str, float], floors: Dict[str, Optional[float]]) -> list:
    """The settings measured faster than their compute floor: the peaks were measured low."""
    return [name for name, t in times.items() if floors.get(name) is not None and t < floors[name]]


def floor_seconds(macs: Dict[str, int], peaks: Dict[str, Optional[float]]) -> Optional[float]:
    """Seconds ``macs`` take at ``peaks``; None where a precision it uses has no peak."""
    total = 0.0
    for precision, count in macs.items():
        if count:
            if peaks.get(precision) is None:
                return None
            total += count / peaks[precision]
    return total


def peaks_text(peaks: Dict[str, Optional[float]]) -> str:
    """``fp32 114, bf16 230, int8 460 G multiply-adds/s`` (``-`` where not measured)."""
    cells = [f"{p} {peaks[p] / 1e9:.0f}" if peaks.get(p) else f"{p} -" for p in PRECISIONS]
    return ", ".join(cells) + " G multiply-adds/s"
