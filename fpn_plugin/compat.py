"""Make the detectron2 that is installed work with today's Python, NumPy and Pillow.

``import fpn_plugin`` calls :func:`apply` before anything else touches detectron2. Each fix is
applied only where the installed detectron2 needs it, as found from what that detectron2 has
and does (never from its version string: git main still calls itself 0.6). Tested with
detectron2 0.6 from PyPI (without compiled ops) and a source build of git main:

- ``compiled_ops_stand_in``: detectron2 installed without its C++/CUDA extension (the
  ``pb1-detectron2`` route of ``make install``) imports ``detectron2._C`` at import time. A
  stand-in module answers the questions ``collect_env_info`` asks and raises
  :class:`MissingCompiledOpError`, naming the op, when an op is used.
- ``numpy_aliases``: NumPy 1.24 removed ``np.int``, ``np.float``, ``np.bool``, ``np.str`` and
  ``np.object``, which detectron2 0.6 still uses.
- ``pillow_aliases``: Pillow 10 removed ``Image.LINEAR`` (used by detectron2 0.6 at import),
  ``Image.CUBIC`` and ``Image.ANTIALIAS``.
- ``map_dataset_retry``: detectron2 0.6's ``MapDataset`` retries a sample that maps to None
  with ``random.sample(<a set>)``, which raises a TypeError on Python >= 3.11, so one
  unreadable image crashes training instead of being skipped.
- ``map_dataset_all_failed``: when every sample maps to None, detectron2 0.6 ends with that
  TypeError and git main with ``ValueError: Sample larger than population or is negative``;
  with the fix, both say "Every sample of the dataset failed to load". Both fixes are one
  replacement of ``MapDataset.__getitem__``, decided by trying the installed ``MapDataset``.
"""
import importlib.util
import logging
import os
import re
import sys
import types

__all__ = ["apply", "has_compiled_ops", "MissingCompiledOpError"]

logger = logging.getLogger(__name__)

_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "str": str, "object": object}
_PILLOW_ALIASES = {"LINEAR": "BILINEAR", "CUBIC": "BICUBIC", "ANTIALIAS": "LANCZOS"}
_SOURCE_BUILD_HINT = (
    "Build detectron2 from source to get them: `D2_SOURCE=<git URL or local checkout> make "
    "install` (needs a C++ compiler, and CUDA's nvcc for the GPU ops)."
)

_applied = None  # the names of the fixes applied, once apply() has run


class MissingCompiledOpError(ImportError):
    """A compiled detectron2 op was used, but detectron2 was installed without them."""


class _CompiledOpsStandIn(types.ModuleType):
    """Stands in for ``detectron2._C`` when the compiled extension is missing.

    Only the version queries of ``detectron2.utils.collect_env`` answer; any other attribute
    is an op, and asking for it raises :class:`MissingCompiledOpError`.
    """

    def __init__(self, reason: str):
        super().__init__("detectron2._C", "fpn_plugin stand-in for detectron2's compiled ops")
        self.__file__ = __file__
        self.fpn_plugin_stand_in = True
        self.reason = reason

    def get_compiler_version(self) -> str:
        return "none: detectron2 has no compiled ops (fpn_plugin stand-in)"

    def get_cuda_version(self) -> str:
        return "none: detectron2 has no compiled ops (fpn_plugin stand-in)"

    def has_cuda(self) -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingCompiledOpError(
            f"detectron2._C.{name} is one of detectron2's compiled ops, and this detectron2 "
            f"has none ({self.reason}). They are needed by rotated boxes (nms_rotated, "
            "box_iou_rotated, ROIAlignRotated), deformable convolution (DeformConv, "
            "ModulatedDeformConv) and the fast COCO evaluator (COCOEvaluator(..., "
            "use_fast_impl=False) uses pycocotools instead). " + _SOURCE_BUILD_HINT
        )


def has_compiled_ops() -> bool:
    """True when ``detectron2._C`` is the real compiled extension."""
    apply()
    import detectron2._C as C

    return not getattr(C, "fpn_plugin_stand_in", False)


def _detectron2_sources() -> str:
    """All of the installed detectron2's Python source, to see which removed names it uses."""
    import detectron2

    texts = []
    for root in detectron2.__path__:
        for dirpath, _, files in os.walk(root):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                        texts.append(f.read())
    return "\n".join(texts)


def _install_compiled_ops_stand_in() -> bool:
    import detectron2

    if "detectron2._C" in sys.modules:
        return False
    if importlib.util.find_spec("detectron2._C") is None:
        reason = "it was installed without its C++/CUDA extension"
    else:
        try:
            import detectron2._C  # noqa: F401

            return False
        except ImportError as e:
            # Typically an extension built against another torch ("undefined symbol").
            reason = f"detectron2._C exists but does not load: {e}"
            logger.warning("%s. Rebuild detectron2 against this torch. %s", reason, _SOURCE_BUILD_HINT)
    stand_in = _CompiledOpsStandIn(reason)
    sys.modules["detectron2._C"] = stand_in
    detectron2._C = stand_in
    _register_torch_op_stand_ins(stand_in)
    return True


# The compiled extension also registers ops with torch (`torch.ops.detectron2.<name>`), which
# detectron2 calls directly; without stand-ins they fail with an obscure "_OpNamespace" error.
_TORCH_OP_SCHEMAS = {"nms_rotated": "(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor"}
_torch_library = None  # must stay alive for the registrations to last


def _register_torch_op_stand_ins(stand_in: _CompiledOpsStandIn) -> None:
    import torch

    global _torch_library
    missing = [name for name in _TORCH_OP_SCHEMAS if not hasattr(torch.ops.detectron2, name)]
    if not missing or _torch_library is not None:
        return
    _torch_library = torch.library.Library("detectron2", "DEF")
    for name in missing:

        def kernel(*args, _name=name):
            getattr(stand_in, _name)  # raises MissingCompiledOpError naming the op

        _torch_library.define(name + _TORCH_OP_SCHEMAS[name])
        _torch_library.impl(name, kernel, "CompositeExplicitAutograd")


def _add_numpy_aliases(source: str) -> bool:
    import numpy as np

    used = set(re.findall(r"\bnp\.(int|float|bool|str|object)\b", source))
    missing = [name for name in sorted(used) if name not in np.__dict__]
    for name in missing:
        setattr(np, name, _NUMPY_ALIASES[name])
    return bool(missing)


def _add_pillow_aliases(source: str) -> bool:
    from PIL import Image

    used = set(re.findall(r"\bImage\.(LINEAR|CUBIC|ANTIALIAS)\b", source))
    missing = [name for name in sorted(used) if not hasattr(Image, name)]
    for name in missing:
        setattr(Image, name, getattr(Image.Resampling, _PILLOW_ALIASES[name]))
    return bool(missing)


class _ProbeStop(Exception):
    """Ends a probe of a ``MapDataset`` that would retry forever."""


def _probe_map_dataset(map_dataset_cls):
    """What the installed ``MapDataset`` does with samples that map to None, found by trying.

    Returns:
        (skips, says_all_failed, instance): whether a sample that maps to None is replaced by
        another one; whether a dataset whose every sample maps to None ends with a
        RuntimeError (detectron2 0.6 on Python >= 3.11 raises a TypeError from
        ``random.sample(<a set>)``, git main a ValueError "Sample larger than population or
        is negative", a version that never gives up would loop forever); and the probe
        instance, to check the attributes the replacement uses.
    """

    def mapper(fails):
        calls = []

        def map_func(x):
            calls.append(x)
            if len(calls) > 20:
                raise _ProbeStop()  # it would retry forever
            return None if fails(x) else x

        return map_func

    quiet = logging.getLogger(map_dataset_cls.__module__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the "Failed to apply `_map_func`" warnings of the probe
    try:
        instance = map_dataset_cls([0, 1], mapper(lambda x: x == 0))
        try:
            skips = instance[0] == 1
        except Exception:  # _ProbeStop included
            skips = False
        try:
            map_dataset_cls([0, 1], mapper(lambda x: True))[0]
            says_all_failed = False
        except RuntimeError:
            says_all_failed = True
        except Exception:  # _ProbeStop included
            says_all_failed = False
    finally:
        quiet.setLevel(level)
    return skips, says_all_failed, instance


# What both detectron2 0.6 and git main set in MapDataset.__init__ and the replacement uses.
_MAP_DATASET_ATTRIBUTES = ("_dataset", "_map_func", "_fallback_candidates", "_rng")


def _fix_map_dataset() -> list:
    """Replace ``MapDataset.__getitem__`` where the installed one mishandles failing samples.

    Returns the names of the fixes this makes (``map_dataset_retry``,
    ``map_dataset_all_failed``), empty when the installed ``MapDataset`` needs neither.
    """
    from detectron2.data import common

    skips, says_all_failed, probe = _probe_map_dataset(common.MapDataset)
    checks = [("map_dataset_retry", skips), ("map_dataset_all_failed", says_all_failed)]
    needed = [name for name, ok in checks if not ok]
    if not needed:
        return []
    missing = [a for a in _MAP_DATASET_ATTRIBUTES if not hasattr(probe, a)]
    if missing:
        logger.warning(
            "detectron2's MapDataset needs %s, but has none of %s to build on: left as it is.",
            ", ".join(needed), ", ".join(missing),
        )
        return []
    getitem = common.MapDataset.__getitem__

    def __getitem__(self, idx):
        retry_count = 0
        cur_idx = int(idx)
        while True:
            data = self._map_func(self._dataset[cur_idx])
            if data is not None:
                self._fallback_candidates.add(cur_idx)
                return data
            retry_count += 1
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError(
                    f"Every sample of the dataset failed to load (last index {cur_idx}); "
                    "check the image paths and annotations."
                )
            # random.sample() takes no sets since Python 3.11; sorting keeps the seeded order.
            cur_idx = self._rng.sample(sorted(self._fallback_candidates), k=1)[0]
            if retry_count >= 3:
                logging.getLogger(common.__name__).warning(
                    "Failed to apply `_map_func` for idx: %s, retry count: %s", idx, retry_count
                )

    __getitem__.__doc__ = getitem.__doc__
    common.MapDataset.__getitem__ = __getitem__
    return needed


def apply() -> list:
    """Apply the fixes the installed detectron2 needs; a second call changes nothing.

    Returns:
        list[str]: the names of the fixes applied so far (see the module docstring).
    """
    global _applied
    if _applied is None:
        source = _detectron2_sources()
        fixes = {
            "compiled_ops_stand_in": _install_compiled_ops_stand_in,
            "numpy_aliases": lambda: _add_numpy_aliases(source),
            "pillow_aliases": lambda: _add_pillow_aliases(source),
        }
        _applied = [name for name, fix in fixes.items() if fix()]
        # Last: importing detectron2.data needs the fixes above.
        _applied += _fix_map_dataset()
    return list(_applied)
