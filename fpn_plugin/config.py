"""The config keys fpn_plugin adds to detectron2's: ``add_fpn_plugin_config(cfg)``."""
from detectron2.config import CfgNode as CN

__all__ = ["add_fpn_plugin_config"]


def add_fpn_plugin_config(cfg: CN) -> CN:
    """Add fpn_plugin's keys, with their defaults, to a detectron2 config (in place).

    Call it after ``get_cfg()`` and before ``merge_from_file``. Every key has a comment
    saying what it does.
    """
    _add_backbone_keys(cfg)
    _add_vgg_keys(cfg)
    _add_engine_keys(cfg)
    _add_data_keys(cfg)
    return cfg


def _add_backbone_keys(_C: CN) -> None:
    """Backbones, ROI heads and weight formats (fpn_plugin.modeling, fpn_plugin.checkpoint)."""


def _add_vgg_keys(_C: CN) -> None:
    """The VGG16 backbone and its fc6/fc7 box head (fpn_plugin.modeling.vgg)."""


def _add_engine_keys(_C: CN) -> None:
    """Training engine: hooks, schedules, precision (fpn_plugin.engine)."""


def _add_data_keys(_C: CN) -> None:
    """Datasets and evaluation (fpn_plugin.data, fpn_plugin.evaluation)."""
