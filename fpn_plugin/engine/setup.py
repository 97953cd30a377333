"""Config and process setup shared by ``train_net.py`` and the tests."""
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config, setup_config

__all__ = ["setup_cfg", "config_device"]


def _load_cfg(args):
    return load_config(args.config_file or None, args.opts or [])


def config_device(args) -> str:
    """``MODEL.DEVICE`` of the config the command line describes (before any process starts)."""
    return _load_cfg(args).MODEL.DEVICE


def setup_cfg(args):
    """:func:`~fpn_plugin.config.setup_config`, frozen, then detectron2's default_setup."""
    # Device resolved ("auto"), the config's datasets registered, NUM_CLASSES following them.
    cfg = setup_config(args.config_file or None, args.opts or [])
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup sets up detectron2's and fvcore's loggers; the engine logs under fpn_plugin.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="fpn_plugin", abbrev_name="fpn")
    return cfg
