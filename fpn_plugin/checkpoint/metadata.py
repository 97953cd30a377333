"""What a checkpoint must carry besides weights so that it can be used alone: class names.

The trainer registers a :class:`ModelMetadata` as a checkpointable, so every checkpoint it
writes holds ``{"metadata": {"class_names": [...]}}``; prediction then needs no dataset
registration.
"""
import logging
from types import SimpleNamespace
from typing import List, Mapping, Optional, Tuple

__all__ = ["ModelMetadata", "class_names_from_checkpoint", "checkpoint_classes", "fit_classes_to_checkpoint"]

logger = logging.getLogger(__name__)


class ModelMetadata:
    """A checkpointable holding the class names of the model's contiguous class ids."""

    def __init__(self, class_names: Optional[List[str]] = None):
        self.class_names = list(class_names) if class_names is not None else None

    def state_dict(self) -> dict:
        return {"class_names": self.class_names}

    def load_state_dict(self, state: Mapping) -> None:
        self.class_names = state.get("class_names")


def class_names_from_checkpoint(extra: Optional[Mapping]) -> Optional[List[str]]:
    """The class names in what ``Checkpointer.load`` returned, or None when absent."""
    metadata = (extra or {}).get("metadata") or {}
    names = metadata.get("class_names")
    return list(names) if names else None


def checkpoint_classes(path: str, allow_unsafe_pickle: bool = False) -> Tuple[Optional[List[str]], Optional[int]]:
    """(class names, class count of the box predictor) of a weights file, None where absent.

    Read with the safe readers (:mod:`fpn_plugin.checkpoint.safe_load`); any path or URL
    detectron2's ``PathManager`` resolves (``detectron2://``, ``torchvision://``, http).
    """
    from detectron2.utils.file_io import PathManager

    from .mismatch import box_predictor_classes
    from .safe_load import load_checkpoint_file

    reader = SimpleNamespace(allow_unsafe_pickle=allow_unsafe_pickle)
    data = load_checkpoint_file(reader, PathManager.get_local_path(path))
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in (data.get("model") or {}).items()}
    return class_names_from_checkpoint(data), box_predictor_classes(state)


def fit_classes_to_checkpoint(cfg, dataset_names: Optional[List[str]] = None) -> Optional[List[str]]:
    """Make ``MODEL.ROI_HEADS.NUM_CLASSES`` the checkpoint's, for prediction; return the names.

    The class names a checkpoint carries (fpn_plugin's trainer writes them) decide the class
    count. A checkpoint without names (a detectron2 model-zoo file) must have a box predictor of
    the config's class count: a predictor of another count would be left random, so that is an
    error giving both counts and the fix.

    Args:
        cfg: an unfrozen config with ``MODEL.WEIGHTS`` set.
        dataset_names: class names from the config's registered datasets, the fallback.

    Raises:
        CheckpointMismatchError: the checkpoint's box predictor does not fit.
    """
    from .mismatch import CheckpointMismatchError

    weights = cfg.MODEL.WEIGHTS
    names, file_classes = checkpoint_classes(weights, cfg.MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE)
    heads = cfg.MODEL.ROI_HEADS
    if names:
        if file_classes is not None and file_classes != len(names):
            raise CheckpointMismatchError(
                f"{weights} carries {len(names)} class names but its box predictor has "
                f"{file_classes} classes: the file is inconsistent."
            )
        if heads.NUM_CLASSES != len(names):
            logger.info("MODEL.ROI_HEADS.NUM_CLASSES %d -> %d: the classes %s of %s.",
                        heads.NUM_CLASSES, len(names), names, weights)
            heads.NUM_CLASSES = len(names)
        return names
    if file_classes is not None and file_classes != heads.NUM_CLASSES:
        raise CheckpointMismatchError(
            f"{weights} has a box predictor for {file_classes} classes, but MODEL.ROI_HEADS."
            f"NUM_CLASSES is {heads.NUM_CLASSES}, and the file carries no class names to go by: "
            f"its predictor would stay random. Set MODEL.ROI_HEADS.NUM_CLASSES {file_classes} "
            "(and the datasets of those classes for their names), or give the checkpoint trained "
            "for this config."
        )
    if dataset_names and len(dataset_names) != heads.NUM_CLASSES:
        raise CheckpointMismatchError(
            f"The config's datasets have {len(dataset_names)} classes {dataset_names}, but the "
            f"model has {heads.NUM_CLASSES} (MODEL.ROI_HEADS.NUM_CLASSES): set it to match."
        )
    return list(dataset_names) if dataset_names else None
