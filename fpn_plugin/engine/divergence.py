"""Training that diverged: the error, and a message that says where and what to try."""
from typing import Optional

from .train_loop import NonFiniteLossError

__all__ = ["TrainingDivergedError", "divergence_message"]


class TrainingDivergedError(FloatingPointError):
    """Training stopped on a NaN/inf or exploded loss, or a NaN/inf gradient; the message says
    what to try."""


def clipping_advice(cfg) -> str:
    """What to try about gradient clipping: switch it on, or clip harder if it is on."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return "gradient clipping (SOLVER.CLIP_GRADIENTS.ENABLED True)"
    return (
        f"stronger gradient clipping (it is on: SOLVER.CLIP_GRADIENTS.CLIP_TYPE "
        f"{clip.CLIP_TYPE!r}, CLIP_VALUE {clip.CLIP_VALUE:g}; try a smaller CLIP_VALUE)"
    )


def divergence_message(cfg, e: NonFiniteLossError, checkpoint_file: Optional[str]) -> str:
    """Where training diverged, the loss terms, the checkpoint kept and what to try.

    Args:
        cfg: the training config (its solver settings are quoted).
        e: the error the training step raised.
        checkpoint_file: the last checkpoint written, or None when there is none.
    """
    s = cfg.SOLVER
    terms = "\n".join(f"    {k} = {v:.6g}" for k, v in e.loss_terms.items())
    if not terms:  # the forward pass failed before the first loss of the step
        terms = "    (none computed in this step)"
    detected = f" ({e.detail})" if e.detail else ""
    if checkpoint_file:
        kept = (
            f"The last good checkpoint is kept: {checkpoint_file} "
            "(no checkpoint is written after this); change the config and run with --resume "
            "to continue from it, or start over."
        )
    else:
        kept = "No checkpoint was written before this iteration (SOLVER.CHECKPOINT_PERIOD)."
    return (
        f"Training diverged at iteration {e.iteration}: the {e.where} "
        f"{'exploded while finite' if e.exploded else 'became NaN or infinite'}{detected}.\n"
        f"  learning rate: {e.lr:.6g}\n  loss terms:\n{terms}\n{kept}\nWhat to try:\n"
        f"  - a lower learning rate: SOLVER.BASE_LR (now {s.BASE_LR:.6g});\n"
        f"  - a longer warmup: SOLVER.WARMUP_ITERS (now {s.WARMUP_ITERS}) or a smaller "
        f"SOLVER.WARMUP_FACTOR (now {s.WARMUP_FACTOR:g});\n"
        "  - normalization in the backbone and FPN (MODEL.PLUGIN_RESNET.NORM or detectron2's "
        "MODEL.RESNETS.NORM, and MODEL.FPN.NORM: 'BN', 'SyncBN' or 'GN'; FrozenBN does not "
        f"normalise a network trained from scratch) or {clipping_advice(cfg)};\n"
        f"  - the batch-scaling rule: the LR is scaled with the total batch ({s.REFERENCE_BATCH_SIZE} "
        "images per step now); if BASE_LR was tuned for another batch, set "
        "SOLVER.REFERENCE_BATCH_SIZE to that batch so BASE_LR is rescaled."
    )
