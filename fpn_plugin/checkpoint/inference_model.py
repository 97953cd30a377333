"""The one way prediction and evaluation build a detector from a config and load its weights."""
from typing import List, Optional, Tuple

from torch import nn

from .loading import PluginCheckpointer
from .metadata import fit_classes_to_checkpoint

__all__ = ["load_inference_model"]


def load_inference_model(cfg, dataset_class_names: Optional[List[str]] = None
                         ) -> Tuple[nn.Module, Optional[List[str]]]:
    """Build ``cfg``'s detector in eval mode with every weight from ``MODEL.WEIGHTS``.

    The class count comes from the checkpoint (``fit_classes_to_checkpoint``); the weights load
    through :meth:`PluginCheckpointer.from_config` for inference, so nothing of the model stays
    random, ``MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK`` decides what a pixel-format mismatch does and
    the safe readers (``ALLOW_UNSAFE_PICKLE``) read the file; ``MODEL.PLUGIN_ROI_ALIGN``
    chooses the ROIAlign kernel. An empty ``MODEL.WEIGHTS`` gives
    the model as built (random); callers that need weights refuse that first.

    Args:
        cfg: an unfrozen config; its ``MODEL.ROI_HEADS.NUM_CLASSES`` becomes the checkpoint's.
        dataset_class_names: class names of the config's datasets, for a checkpoint without.

    Returns:
        (model, class names or None)

    Raises:
        CheckpointMismatchError: the file does not fit the model (its subclass
            ``PixelFormatMismatchError`` for the pixel format, with FORMAT_CHECK "error").
    """
    from detectron2.modeling import build_model

    from ..modeling.roi_align import use_configured_roi_align

    names = fit_classes_to_checkpoint(cfg, dataset_class_names) if cfg.MODEL.WEIGHTS else None
    model = build_model(cfg)
    use_configured_roi_align(model, cfg)
    model.eval()
    if cfg.MODEL.WEIGHTS:
        PluginCheckpointer.from_config(cfg, model, for_inference=True).load(cfg.MODEL.WEIGHTS)
    return model, names
