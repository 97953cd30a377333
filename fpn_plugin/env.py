"""Print what fpn_plugin runs on: ``python -m fpn_plugin.env``.

Versions of the libraries that matter, where detectron2 came from and whether it has its
compiled ops, what ``MODEL.DEVICE: auto`` resolves to, and the CPU features that make bf16 fast.
"""
import importlib.metadata
import json
import os
import platform
import sys

import torch

from . import compat
from .device import resolve_device
from . import precision

__all__ = ["collect", "detectron2_origin"]

_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def detectron2_origin() -> str:
    """Describe where the importable detectron2 came from."""
    import detectron2

    names = importlib.metadata.packages_distributions().get("detectron2", [])
    if not names:
        return f"not installed by pip (imported from {os.path.dirname(detectron2.__file__)})"
    dist = importlib.metadata.distribution(names[0])
    if names[0] == "pb1-detectron2":
        return f"PyPI pb1-detectron2 {dist.version}: the official v0.6 Python source, no C++ build"
    direct_url = dist.read_text("direct_url.json")
    if direct_url:
        info = json.loads(direct_url)
        vcs = info.get("vcs_info", {})
        where = info.get("url", "?") + (f"@{vcs['commit_id']}" if "commit_id" in vcs else "")
        return f"source build of {names[0]} {dist.version} from {where}"
    return f"{names[0]} {dist.version} (a prebuilt wheel)"


def _cpu_flags() -> str:
    flags = precision.cpu_flags()
    if not flags:
        return "unknown (no /proc/cpuinfo)"
    return " ".join(flag for flag in _CPU_FLAGS if flag in flags) or "none of " + " ".join(_CPU_FLAGS)


def _auto_precision(device: str) -> str:
    choice = precision.choose_precision("auto", device, setting="auto")
    return f"{choice.name} ({choice.reason})"


def _int8_activations() -> str:
    bits = precision.int8_activation_quant_max().bit_length()
    why = "VNNI" if precision.cpu_has_vnni() else "no VNNI: 8 bits would saturate"
    return f"{bits} bits ({why}; the fast path's int8 RPN conv)"


def collect() -> list:
    """Return (name, value) rows describing the environment."""
    import detectron2

    fixes = compat.apply()
    rows = [
        ("python", sys.version.split()[0] + f" ({sys.executable})"),
        ("platform", platform.platform()),
        ("fpn_plugin", f"{_version('fpn-plugin')} @ {os.path.dirname(__file__)}"),
        ("torch", torch.__version__ + f" (CUDA build {torch.version.cuda})"),
        ("torchvision", _version("torchvision")),
        ("detectron2", f"{detectron2.__version__} @ {os.path.dirname(detectron2.__file__)}"),
        ("detectron2 origin", detectron2_origin()),
        ("detectron2 compiled ops", "yes" if compat.has_compiled_ops() else "no (stand-in)"),
        ("compatibility fixes", ", ".join(fixes) or "none needed"),
    ]
    for name in ("numpy", "Pillow", "pycocotools", "fvcore", "iopath", "opencv-python-headless", "fiftyone"):
        rows.append((name, _version(name)))
    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    rows += [
        ("CUDA GPUs", ", ".join(cuda) if cuda else "none"),
        ("MODEL.DEVICE auto", resolve_device("auto")),
        ("CPU", f"{os.cpu_count()} cores, flags: {_cpu_flags()}"),
        ("torch CPU capability", torch.backends.cpu.get_cpu_capability()),
        ("bf16 on CPU", "native" if precision.cpu_has_native_bf16() else "emulated (slower than fp32)"),
        ("precision auto", _auto_precision(resolve_device("auto"))),
        ("int8 activations", _int8_activations()),
    ]
    return rows


def main() -> None:
    rows = collect()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
