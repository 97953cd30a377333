"""Config and process setup shared by ``train_net.py`` and the tests."""
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..data import setup_datasets
from ..device import resolve_device

__all__ = ["setup_cfg", "config_device"]


def _load_cfg(args):
    return load_config(args.config_file or None, args.opts or [])


def config_device(args) -> str:
    """``MODEL.DEVICE`` of the config the command line describes (before any process starts)."""
    return _load_cfg(args).MODEL.DEVICE


def setup_cfg(args):
    """get_cfg + fpn_plugin's keys + file + overrides, datasets, then detectron2's default_setup."""
    cfg = _load_cfg(args)
    cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)  # "auto" -> "cuda" or "cpu"
    # The config's own datasets (DATASETS.CUSTOM ...) registered, NUM_CLASSES following them.
    setup_datasets(cfg, args.config_file or None)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup sets up detectron2's and fvcore's loggers; the engine logs under fpn_plugin.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="fpn_plugin", abbrev_name="fpn")
    return cfg
