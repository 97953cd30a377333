"""The config's evaluation data, as the notebook's prediction step takes it: images and JSON."""
from typing import List, Optional

from ..config import setup_config

__all__ = ["eval_images", "eval_coco_json"]


def _registered(config_file: str):
    cfg = setup_config(config_file)  # its datasets registered, as train_net.py registers them
    if not cfg.DATASETS.TEST:
        raise ValueError(f"{config_file} has no DATASETS.TEST: set OWN_VAL (or DATASET) to evaluate.")
    return cfg


def eval_images(config_file: str, count: int = 4) -> List[str]:
    """The first ``count`` image files of the config's first test dataset."""
    from detectron2.data import DatasetCatalog

    cfg = _registered(config_file)
    return [r["file_name"] for r in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:count]]


def eval_coco_json(config_file: str) -> Optional[str]:
    """The COCO JSON of the config's first test dataset, when it has one (for FiftyOne)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    cfg = _registered(config_file)
    name = cfg.DATASETS.TEST[0]
    DatasetCatalog.get(name)  # generated data (the shapes) writes its JSON on first use
    return MetadataCatalog.get(name).get("json_file")
