"""Where datasets live: the datasets root, and paths relative to a config file or that root."""
import os
from typing import Optional

__all__ = ["datasets_root", "resolve_path"]


def datasets_root(cfg=None) -> str:
    """The datasets root: ``cfg.DATASETS.ROOT`` if set, else ``$DETECTRON2_DATASETS``, else
    ``./datasets`` (detectron2's own rule for its builtin datasets)."""
    root = ""
    if cfg is not None:
        root = cfg.get("DATASETS", {}).get("ROOT", "") or ""
    return os.path.expanduser(root or os.environ.get("DETECTRON2_DATASETS", "datasets"))


def resolve_path(path: str, config_file: Optional[str], root: str, what: str) -> str:
    """Resolve a dataset path from the config.

    Absolute paths are kept. A relative path is looked up next to the config file first, then
    under the datasets root.

    Args:
        path: the path as written in the config.
        config_file: the config file it was written in (None when unknown).
        root: the datasets root (:func:`datasets_root`).
        what: the config key, for the error message.

    Raises:
        FileNotFoundError: listing every place looked at.
    """
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        candidates = [path]
    else:
        candidates = []
        if config_file:
            candidates.append(os.path.join(os.path.dirname(os.path.abspath(config_file)), path))
        candidates.append(os.path.join(root, path))
    for candidate in candidates:
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    raise FileNotFoundError(
        f"{what} = {path!r} was not found; looked at: "
        + ", ".join(os.path.abspath(c) for c in candidates)
        + ". Relative paths are taken from the config file's folder, then from the datasets "
        "root (DATASETS.ROOT, else $DETECTRON2_DATASETS, else ./datasets)."
    )
