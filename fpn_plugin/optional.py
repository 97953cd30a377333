"""The optional dependencies: which extra of ``fpn-plugin`` installs each, and the one check.

The core (training, evaluation, prediction) needs neither FiftyOne nor matplotlib; a feature
that does imports its library through :func:`require`, which names the extra when it is missing.
``make install`` installs every extra.
"""
import importlib
import importlib.util

__all__ = ["EXTRAS", "OptionalDependencyError", "available", "install_hint", "require"]

# The module a feature imports -> the extra of pyproject.toml that installs it.
EXTRAS = {
    "fiftyone": "fiftyone",
    "matplotlib": "plots",
    "onnx": "export",
    "onnxruntime": "export",
    "IPython": "notebook",
}


class OptionalDependencyError(ImportError):
    """An optional feature's library is not installed; the message says which extra has it."""


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def install_hint(module: str) -> str:
    """How to install the extra that provides ``module``, for an error message."""
    extra = EXTRAS[module]
    return (f"pip install 'fpn-plugin[{extra}]' (from a clone: pip install -e '.[{extra}]', "
            "or make install for everything)")


def require(module: str, feature: str):
    """Import and return ``module``, or raise saying which extra installs it.

    Args:
        module: the top-level module, a key of :data:`EXTRAS`.
        feature: what needs it, for the message (e.g. "predict.py --fiftyone").

    Raises:
        OptionalDependencyError: ``module`` is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != module:
            raise  # the library is there but one of its own imports failed: show that error
        raise OptionalDependencyError(
            f"{feature} needs {module}, which is not installed: {install_hint(module)}."
        ) from e
