"""Reading weight files without running code: the one rule every route that loads weights uses.

A pickle may name any importable function and call it while it is read (``os.system`` is the
classic), and both ``.pkl`` model-zoo files and ``torch.save``'s ``.pth`` files are pickles. So:

- ``.pkl`` files (MSRA ImageNet ``R-50.pkl``, detectron2 model-zoo detectors ``model_final_*.pkl``,
  Detectron1 ``{"blobs": ...}`` files: dicts of NumPy arrays, strings and numbers) are read by
  :class:`WeightsUnpickler`, which resolves only the globals in :data:`ALLOWED_GLOBALS` (NumPy
  array, dtype and scalar reconstruction, builtin containers, ``collections.OrderedDict``);
- ``.pth``/``.pyth`` and every other file goes through ``torch.load(weights_only=True)``: tensors,
  containers, numbers and strings, as ``torch.save`` writes them.

Anything else is refused with :class:`UnsafeWeightsError`, naming the file and what it asked for,
before any of it runs. ``allow_unsafe=True`` (``MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE``, the
``--allow-unsafe-pickle`` flag of ``predict.py`` and ``train_net.py``) reads such a file with plain
pickle after a warning in the log; only for files from a trusted source.

:func:`install` makes detectron2's own ``DetectionCheckpointer`` (and so ``DefaultPredictor``,
``DefaultTrainer`` and every subclass, ``PluginCheckpointer`` included) read files this way; it
runs on ``import fpn_plugin``.
"""
import importlib
import inspect
import logging
import pickle
import re
from typing import Any, Mapping
from urllib.parse import parse_qs

import torch

from .not_a_checkpoint import NotACheckpointError, why_not_a_checkpoint

__all__ = [
    "ALLOWED_GLOBALS",
    "UNSAFE_KEY",
    "UnsafeWeightsError",
    "WeightsUnpickler",
    "install",
    "load_checkpoint_file",
    "load_pickle_weights",
    "load_torch_weights",
]

logger = logging.getLogger(__name__)

# The config key that lets a trusted legacy file load with plain pickle (fpn_plugin/config.py).
UNSAFE_KEY = "MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE"

# Every global a weights .pkl needs (module, name), as Python 3 names them (Python 2 pickles'
# __builtin__/copy_reg names are mapped first). NumPy 1 writes numpy.core.*, NumPy 2 numpy._core.*.
ALLOWED_GLOBALS = frozenset(
    [(core + ".multiarray", name) for core in ("numpy.core", "numpy._core")
     for name in ("_reconstruct", "scalar")]  # ndarray.__reduce__ and NumPy scalars
    + [(core + ".numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")]  # protocol 5
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    # Builtin containers and numbers a pickle builds by calling their type (protocol 2 has no
    # opcode for sets or empty bytes); bytes in a protocol-2 pickle: _codecs.encode(text, "latin1").
    + [("builtins", name) for name in ("set", "frozenset", "bytearray", "bytes", "complex")]
    + [("_codecs", "encode")]
    + [("collections", "OrderedDict")]
)

_REFUSED_HINT = (
    f"nothing was executed. If you trust this file, set {UNSAFE_KEY} True (or pass "
    "--allow-unsafe-pickle) to load it with plain pickle."
)


class UnsafeWeightsError(pickle.UnpicklingError, ValueError):
    """A weights file asks for something that is not weights; nothing of it was run.

    ``refused`` is what it asked for (e.g. ``posix.system``). A ``ValueError`` too: the
    command-line tools report it as a bad argument, in one line.
    """

    def __init__(self, message: str, refused: str = ""):
        super().__init__(message)
        self.refused = refused


class WeightsUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`.

    ``find_class`` is the only way a pickle reaches a callable, so refusing there means nothing
    outside the list can be called. Persistent ids are refused by ``pickle.Unpickler`` itself.
    """

    def __init__(self, file, *, name: str = "", **kwargs):
        super().__init__(file, **kwargs)
        self._name = name or getattr(file, "name", "the file")

    def find_class(self, module: str, name: str):
        module, name = _python3_name(module, name)
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeWeightsError(
                f"{self._name} asks for {module}.{name} while it is read, which weights do not "
                f"need (they are NumPy arrays, numbers, strings and containers): refused; "
                + _REFUSED_HINT,
                refused=f"{module}.{name}",
            )
        if module.startswith("numpy.core"):
            # NumPy 2 keeps these in numpy._core (numpy.core warns); NumPy 1 has only numpy.core.
            try:
                return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
            except (ImportError, AttributeError):
                pass
        return getattr(importlib.import_module(module), name)


def _python3_name(module: str, name: str):
    """Python 2 names (``__builtin__.set``) as Python 3 knows them, as ``pickle`` maps them."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def load_pickle_weights(path: str, *, allow_unsafe: bool = False) -> Any:
    """Read a weights ``.pkl`` (``encoding="latin1"``, as detectron2 does, for Python 2 files).

    Raises:
        UnsafeWeightsError: the file asks for a global outside :data:`ALLOWED_GLOBALS` (and
            ``allow_unsafe`` is False).
    """
    from detectron2.utils.file_io import PathManager

    try:
        with PathManager.open(path, "rb") as f:
            return WeightsUnpickler(f, name=path, encoding="latin1").load()
    except UnsafeWeightsError as e:
        if not allow_unsafe:
            raise
        _warn_unsafe(path, e.refused)
    with PathManager.open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


_TORCH_HAS_WEIGHTS_ONLY = "weights_only" in inspect.signature(torch.load).parameters


def load_torch_weights(path: str, *, allow_unsafe: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with a one-line refusal.

    Raises:
        UnsafeWeightsError: torch's weights-only reader refused the file (and ``allow_unsafe``
            is False); the message names the file and the global or construct refused.
    """
    from detectron2.utils.file_io import PathManager

    if not _TORCH_HAS_WEIGHTS_ONLY:
        if not allow_unsafe:
            raise UnsafeWeightsError(
                f"{path}: torch {torch.__version__} has no torch.load(weights_only=True) (torch "
                f">= 1.13 has), so it cannot be read without running the code it may hold; "
                + _REFUSED_HINT
            )
        _warn_unsafe(path, f"torch.load without weights_only (torch {torch.__version__})")
        with PathManager.open(path, "rb") as f:
            return torch.load(f, map_location="cpu")
    try:
        with PathManager.open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" not in text:
            raise  # not a refusal: a damaged file, say, with pickle's own message
        refused = _torch_refusal(text)
        if not allow_unsafe:
            raise UnsafeWeightsError(
                f"{path} asks for {refused} while it is read, which torch.load(weights_only=True) "
                "refuses (a weights file holds tensors, numbers, strings and containers): refused; "
                + _REFUSED_HINT,
                refused=refused,
            ) from None
        _warn_unsafe(path, refused)
    with PathManager.open(path, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=False)


def _torch_refusal(message: str) -> str:
    """What torch's weights-only reader refused, from its long message."""
    found = re.search(r"GLOBAL ([\w.]+)", message)  # "Unsupported global: GLOBAL posix.system ..."
    if found:
        return found.group(1)
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)  # "Unsupported operand 149"
    reason = found.group(1).strip() if found else "something outside its allowed types"
    return f"something its weights-only reader does not allow ({reason.rstrip('.')})"


def _warn_unsafe(path: str, what: str) -> None:
    logger.warning(
        f"{UNSAFE_KEY} is True: loading {path}, which asks for {what}, with plain pickle. "
        "This runs whatever code the file holds; do it only for files from a trusted source."
    )


def _read_or_explain(read, path: str):
    """``read()``, with errors of files that are no checkpoint said in one line."""
    try:
        return read()
    except UnsafeWeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError, IndexError) as e:
        raise NotACheckpointError(
            f"{path} could not be read as a weights file ({type(e).__name__}: {e}): it is "
            "damaged, cut short, or not a checkpoint."
        ) from e


def load_checkpoint_file(checkpointer, filename: str) -> Mapping:
    """``DetectionCheckpointer._load_file`` with the safe readers (the same results otherwise).

    detectron2's own reads ``.pkl`` with ``pickle.load`` (0.6 and git main). The checkpointer's
    ``allow_unsafe_pickle`` attribute (False unless set, e.g. by
    ``PluginCheckpointer.from_config`` from ``MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE``)
    permits plain pickle for files the safe readers refuse.
    """
    allow = bool(getattr(checkpointer, "allow_unsafe_pickle", False))
    log = getattr(checkpointer, "logger", logger)
    problem = why_not_a_checkpoint(filename)
    if problem:
        raise NotACheckpointError(f"{filename} is not a weights file: {problem}.")
    if filename.endswith(".pkl"):
        data = _mapping(_read_or_explain(lambda: load_pickle_weights(filename, allow_unsafe=allow), filename), filename)
        if "model" in data and "__author__" in data:
            # file is in Detectron2 model zoo format
            log.info("Reading a file from '{}'".format(data["__author__"]))
            return data
        # assume file is from Caffe2 / Detectron1 model zoo
        if "blobs" in data:
            # Detection models have "blobs", but ImageNet models don't
            data = _mapping(data["blobs"], filename)
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
    loaded = _mapping(_read_or_explain(lambda: load_torch_weights(filename, allow_unsafe=allow), filename), filename)
    if filename.endswith(".pyth"):
        # assume file is from pycls; no one else seems to use the ".pyth" extension
        if "model_state" not in loaded:
            raise ValueError(f"Cannot load .pyth file {filename}; pycls checkpoints must contain 'model_state'.")
        model_state = {k: v for k, v in loaded["model_state"].items() if not k.endswith("num_batches_tracked")}
        return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
    if "model" not in loaded:
        loaded = {"model": loaded}
    parsed_url = getattr(checkpointer, "_parsed_url_during_load", None)
    if parsed_url is not None:
        # detectron2 main: "w.pth?matching_heuristics=True" (its load() strips the query).
        queries = parse_qs(parsed_url.query)
        if queries.pop("matching_heuristics", "False") == ["True"]:
            loaded["matching_heuristics"] = True
        if queries:
            raise ValueError(f"Unsupported query remaining: {queries}, original filename: {parsed_url.geturl()}")
    return loaded


def _mapping(data, filename: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{filename} holds a {type(data).__name__}, not a dict of weights: not a checkpoint."
        )
    return data


def install() -> None:
    """Make detectron2's ``DetectionCheckpointer`` read files with :func:`load_checkpoint_file`."""
    from detectron2.checkpoint import DetectionCheckpointer

    # detectron2 0.6 and git main read .pkl weights with plain pickle.load: any file runs code.
    if DetectionCheckpointer._load_file is not _safe_load_file:
        DetectionCheckpointer._load_file = _safe_load_file


def _safe_load_file(self, filename):
    return load_checkpoint_file(self, filename)
