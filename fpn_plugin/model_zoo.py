"""The configs that ship inside the package, reachable as detectron2's ``model_zoo`` does it.

    from fpn_plugin import model_zoo
    cfg = model_zoo.get_config("fpn_r50.yaml")            # a config with fpn_plugin's keys
    path = model_zoo.get_config_file("fpn_r50.yaml")      # its file, for --config-file
    model = model_zoo.get("fpn_r18.yaml", weights="model_final.pth")

The files are ``fpn_plugin/configs/*.yaml``; the repository's top-level ``configs/`` is a link to
that folder, so ``train_net.py --config-file configs/fpn_r50.yaml`` and a ``pip install .`` (or a
wheel, where there is no repository) read the same files.
"""
import difflib
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["list_configs", "get_config_file", "get_config", "get"]

_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def list_configs() -> List[str]:
    """The names of the shipped configs (``Base-*`` ones are only meant as ``_BASE_``)."""
    return sorted(p.name for p in _CONFIG_DIR.glob("*.yaml"))


def get_config_file(config_path: str) -> str:
    """The absolute path of a shipped config.

    Args:
        config_path: its name, e.g. ``"fpn_r50.yaml"`` (a leading ``configs/`` is accepted, so
            the path the README's commands use works too).

    Raises:
        FileNotFoundError: no such config; the message lists the closest names and where the
            configs are.
    """
    name = config_path[len("configs/"):] if config_path.startswith("configs/") else config_path
    path = _CONFIG_DIR / name
    if not path.is_file():
        close = difflib.get_close_matches(name, list_configs(), n=3, cutoff=0.4)
        raise FileNotFoundError(
            f"fpn_plugin ships no config {config_path!r} (in {_CONFIG_DIR})"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + f" The configs: {', '.join(list_configs())}."
        )
    return str(path)


def get_config(config_path: str, opts: Sequence[str] = ()):
    """A shipped config loaded with fpn_plugin's keys (:func:`fpn_plugin.config.load_config`)."""
    from .config import load_config

    return load_config(get_config_file(config_path), opts)


def get(config_path: str, weights: Optional[str] = None, device: str = "cpu", opts: Sequence[str] = ()):
    """A model built from a shipped config, in eval mode.

    The plugin publishes no trained weights, so unlike detectron2's ``model_zoo.get`` nothing is
    downloaded: without ``weights`` the model is randomly initialised (the config's
    ``MODEL.WEIGHTS``, ImageNet weights for training, is not loaded); with ``weights`` every
    weight is loaded from that file as the Predictor loads it
    (:func:`~fpn_plugin.checkpoint.load_inference_model`: class count from the checkpoint, the
    format checks, nothing left random).

    Args:
        config_path: a shipped config's name (see :func:`list_configs`).
        weights: a checkpoint file or URL, or None.
        device: "cpu", "cuda", "auto", ...
        opts: config overrides, ``["KEY", "VALUE", ...]``.
    """
    from .checkpoint import load_inference_model
    from .device import resolve_device

    cfg = get_config(config_path, opts)
    cfg.MODEL.DEVICE = resolve_device(device)
    cfg.MODEL.WEIGHTS = weights or ""
    model, _ = load_inference_model(cfg)
    return model
