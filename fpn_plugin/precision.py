"""The one precision policy: what "auto" means on each device, and whether bf16 is native here.

Training (``SOLVER.AMP``), ``Predictor``/``predict.py --precision``, the CPU fast path
(``optimize_for_cpu(bf16=...)``), the notebook and the benchmarks all ask
:func:`choose_precision`; nothing else decides.

=================  ==========================  =======================================
device             "auto"                      forced "bf16" / "fp16"
=================  ==========================  =======================================
CUDA               fp16 (with loss scaling)    bf16 where the GPU supports it, else error
CPU, native bf16   bf16                        bf16; fp16 is an error (no fast CPU fp16)
CPU, emulated      fp32                        bf16 with a warning giving the measured
                                               cost; fp16 is an error
=================  ==========================  =======================================

bf16 is native on a CPU with AVX512-BF16 or AMX; elsewhere oneDNN runs a reference kernel.
The int8 convolutions of the CPU fast path use all 8 bits of their activations only where the
CPU has AVX512-VNNI (:func:`int8_activation_quant_max`).
"""
import logging
import warnings
from typing import FrozenSet, NamedTuple, Tuple

import torch

__all__ = [
    "PRECISIONS", "PrecisionChoice", "choose_precision", "cpu_has_native_bf16", "cpu_bf16_flags", "cpu_flags",
    "EMULATED_BF16_COST", "cpu_has_vnni", "int8_activation_quant_max",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

# What emulated bf16 measured on the 2-core AVX2-only EPYC (benchmarks/bench_bf16_train.py,
# benchmarks/bench_cpu_inference.py): said whenever someone forces bf16 on such a CPU.
EMULATED_BF16_COST = (
    "a training step took 5.8x the fp32 time and a 3x3 convolution 30-280x on an AVX2-only CPU"
)

# The CPU flags that make oneDNN's bf16 kernels native.
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

_logged = set()


class PrecisionChoice(NamedTuple):
    """The precision to run in, and why (for the log line)."""

    name: str  # "fp32", "fp16" or "bf16"
    reason: str


def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def cpu_bf16_flags() -> Tuple[str, ...]:
    """The CPU's flags among amx_bf16 and avx512_bf16 (for messages; the check is oneDNN's)."""
    flags = cpu_flags()
    return tuple(flag for flag in _BF16_FLAGS if flag in flags)


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX), not emulated.

    The one capability check: tests simulate either answer by monkeypatching it here.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def cpu_has_vnni() -> bool:
    """True when torch's int8 CPU kernels use AVX512-VNNI here (torch's own check).

    The one int8 capability check: tests simulate either answer by monkeypatching it here.
    """
    check = getattr(torch.cpu, "_is_vnni_supported", None)  # private; absent in old torch
    return bool(check()) if check is not None else "avx512_vnni" in cpu_flags()


def int8_activation_quant_max() -> int:
    """The largest quint8 activation value the int8 convolutions may use on this CPU.

    Without VNNI, fbgemm multiplies uint8 activations by int8 weights with ``vpmaddubsw``, whose
    int16 sums saturate on full-range inputs: torch's x86 default keeps activations to 7 bits
    (127). With AVX512-VNNI the products are summed in int32, so all 8 bits (255) are exact
    and halve the rounding step.
    """
    return 255 if cpu_has_vnni() else 127


def _native_reason() -> str:
    flags = cpu_bf16_flags()
    return "this CPU has " + (" and ".join(flags) if flags else "native bf16 (oneDNN)")


def choose_precision(requested: str, device: str, setting: str = "precision") -> PrecisionChoice:
    """Resolve a requested precision for a resolved torch device; logs the choice once.

    Args:
        requested: one of :data:`PRECISIONS`.
        device: a resolved torch device ("cpu", "cuda", "cuda:1"; not "auto").
        setting: the name the user set it by (e.g. ``SOLVER.AMP.PRECISION``), for messages.

    Returns:
        A :class:`PrecisionChoice`. A forced bf16 on a CPU that emulates it is kept, with a
        ``RuntimeWarning`` that gives the measured cost.

    Raises:
        ValueError: an unknown name, or a precision the device cannot run.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"{setting} is {requested!r}; choose one of {list(PRECISIONS)}.")
    on_cuda = torch.device(device).type == "cuda"
    if requested == "fp32":
        choice = PrecisionChoice("fp32", "full precision")
    elif on_cuda:
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"{setting} 'bf16' on {torch.cuda.get_device_name()}, which has no bf16 support. "
                "Use 'fp16' (or 'auto')."
            )
        name = "fp16" if requested == "auto" else requested
        choice = PrecisionChoice(name, "CUDA, with loss scaling" if name == "fp16" else "CUDA")
    elif requested == "fp16":
        raise ValueError(
            f"{setting} 'fp16' needs CUDA, but the device is {device!r}. Use 'bf16' (or 'auto') "
            "for reduced precision on a CPU."
        )
    elif cpu_has_native_bf16():
        choice = PrecisionChoice("bf16", _native_reason())
    elif requested == "auto":
        choice = PrecisionChoice("fp32", "this CPU emulates bf16 (no avx512_bf16 or AMX): slower than fp32")
    else:
        message = (
            f"{setting} 'bf16' on a CPU without native bf16 (no avx512_bf16 or AMX; see `python -m "
            f"fpn_plugin.env`): oneDNN emulates it, far slower than fp32 ({EMULATED_BF16_COST}). "
            "Use 'auto' or 'fp32' on this CPU."
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        logger.warning(message)
        choice = PrecisionChoice("bf16", "emulated on this CPU: slower than fp32")
    line = f"precision: {choice.name} ({setting} {requested!r}: {choice.reason})"
    if line not in _logged:  # once per process, however many models are built
        _logged.add(line)
        logger.info(line)
    return choice
