"""What does not fit between a weights file and the model, said in one error.

:class:`CheckpointMismatchError` is what every converter raises; the checks here decide, once
a file is converted to the model's names, whether every weight of the model comes from it
(only a box predictor of another class count may stay new, and only for training).
"""
import logging
from typing import Iterable, Mapping, Optional

import torch

__all__ = ["CheckpointMismatchError", "box_predictor_classes"]

logger = logging.getLogger(__name__)

# Keys every checkpoint may lack: BatchNorm counters and non-persistent buffers.
OPTIONAL_KEYS = ("num_batches_tracked",)


class CheckpointMismatchError(ValueError):
    """MODEL.WEIGHTS does not fit the model: other depth, architecture or content."""


def format_keys(keys: Iterable[str], limit: int = 8) -> str:
    """The first ``limit`` keys, in the order given, and how many more there are."""
    keys = list(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def sample_keys(state) -> str:
    """Five keys of a state dict, sorted, to show what it looks like."""
    return format_keys(sorted(state), 5) if state else "(empty)"


def box_predictor_classes(state: Mapping[str, torch.Tensor]) -> Optional[int]:
    """The class count of a checkpoint's box predictor (None when it has none)."""
    scores = state.get("roi_heads.box_predictor.cls_score.weight")
    return None if scores is None else int(scores.shape[0]) - 1  # + background


def refuse_backbone_only(kind: str, converted, model_state) -> None:
    """Raise when an ImageNet backbone file would leave weights of an inference model random."""
    left = [k for k in model_state if k not in converted and not k.endswith(OPTIONAL_KEYS)]
    if not left:
        return  # a backbone-only model: nothing stays random
    prefixes = sorted({".".join(k.split(".")[:2]) for k in left})
    raise CheckpointMismatchError(
        f"MODEL.WEIGHTS is an ImageNet backbone ({kind}), but this model is used for prediction "
        f"or evaluation: {len(left)} of its weights (in {', '.join(prefixes[:6])}) would stay at "
        "random initialisation. Give a trained detector checkpoint (model_final.pth of your "
        "training, or a detectron2 model-zoo detector)."
    )


def check_complete(converted: Mapping[str, torch.Tensor], model_state, what: str,
                   inference: bool = False) -> None:
    """Every model weight must come from the file; only the class count may differ, and only
    for training (fine-tuning), never for prediction or evaluation."""
    missing = [k for k in model_state if k not in converted and not k.endswith(OPTIONAL_KEYS)]
    if missing:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in missing})
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS is {what}, but {len(missing)} of the model's weights are not in it "
            f"(in {', '.join(prefixes[:6])}): {format_keys(missing)}. Its keys look like "
            f"{sample_keys(converted)}: it was made for another architecture or depth."
        )
    wrong = [k for k in model_state if tuple(converted[k].shape) != tuple(model_state[k].shape)
             and not k.endswith(OPTIONAL_KEYS)]
    heads = [k for k in wrong if k.startswith("roi_heads.box_predictor.")]
    if len(heads) < len(wrong):
        details = [f"{k}: file {tuple(converted[k].shape)} vs model {tuple(model_state[k].shape)}"
                   for k in wrong if k not in heads]
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS is {what}, but weights have other shapes: {format_keys(details, 4)}."
        )
    if heads:
        file_classes, model_classes = box_predictor_classes(converted), box_predictor_classes(model_state)
        counts = f"the file's box predictor has {file_classes} classes, the model's {model_classes}"
        if inference:
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS is {what}, but {counts} (MODEL.ROI_HEADS.NUM_CLASSES): predicting "
                "or evaluating with it would leave the box predictor at random initialisation. Set "
                f"MODEL.ROI_HEADS.NUM_CLASSES {file_classes} (and the datasets of those classes), "
                "or give the checkpoint trained for this config."
            )
        # Fine-tuning on another number of classes: detectron2 re-initialises the predictor.
        logger.warning("Fine-tuning to another class count: %s; the box predictor (%s) is not "
                       "loaded and starts at random initialisation.", counts, format_keys(heads))


def unrecognised_message(state, model_state) -> str:
    """Why a file in no known format cannot load: a classifier head alone, or foreign keys."""
    head_only = all(k.split(".")[0] in ("fc", "classifier", "head", "heads", "fc1000")
                    or k.startswith(("fc1000_", "pred_")) for k in state)
    if state and head_only:
        return (
            f"MODEL.WEIGHTS holds only a classifier head ({sample_keys(state)}), no backbone weights: "
            "use the full ImageNet model file."
        )
    return (
        f"MODEL.WEIGHTS is in no known format and shares no key with the model. Its keys look "
        f"like {sample_keys(state)}; the model's like {sample_keys(model_state)}. Known formats: "
        "torchvision ResNet/VGG16 .pth, torchvision://NAME, MSRA R-50/R-101.pkl, detectron2 "
        "detector checkpoints, and fpn_plugin's own checkpoints."
    )
