"""The config keys fpn_plugin adds to detectron2's: ``add_fpn_plugin_config(cfg)``."""
from detectron2.config import CfgNode as CN

__all__ = ["add_fpn_plugin_config"]


def add_fpn_plugin_config(cfg: CN) -> CN:
    """Add fpn_plugin's keys, with their defaults, to a detectron2 config (in place).

    Every key has a comment saying what it does. Call it after ``get_cfg()`` and before
    ``merge_from_file``.
    """
    # Already added: calling it twice must not reset values merged in between.
    if cfg.get("FPN_PLUGIN_CONFIG", False):
        return cfg
    cfg.FPN_PLUGIN_CONFIG = True  # marks a config that has fpn_plugin's keys
    return cfg
