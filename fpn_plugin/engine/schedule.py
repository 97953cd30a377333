"""Batch-size scaling of a schedule, and schedules in epochs.

A config's BASE_LR, MAX_ITER, STEPS, WARMUP_ITERS and periods are written for one total batch
(the *reference*, typically 8 GPUs x 2 images = 16). The batch actually used per optimizer
step is ``processes x SOLVER.IMS_PER_DEVICE x SOLVER.ACCUMULATION_STEPS``. When the two
differ, the schedule is rescaled so that the same number of images is seen and the LR follows
the linear scaling rule (Goyal et al., "Accurate, Large Minibatch SGD", 2017):
``factor = actual / reference``, ``LR *= factor``, iteration counts ``/= factor``.
"""
import math
from typing import Dict, List, Tuple

from detectron2.config import CfgNode
from tabulate import tabulate

__all__ = ["scale_schedule", "apply_epochs", "scale_iterations", "format_table"]

_LR_RULES = {"linear": lambda f: f, "sqrt": math.sqrt, "none": lambda f: 1.0}


def _iters(value: float) -> int:
    return max(1, int(round(value)))


def scale_iterations(cfg: CfgNode, factor: float) -> Dict[str, object]:
    """The config's iteration counts divided by ``factor``: the one rounding rule for them.

    Each count is rounded to the nearest integer and kept >= 1; a period of 0 (off) stays 0,
    and the warmup may become 0. STEPS are kept sorted, without duplicates and below MAX_ITER,
    since detectron2's multi-step schedule rejects any other (fvcore raises on them).

    Args:
        cfg: a config with fpn_plugin's keys.
        factor: how many times shorter the schedule gets (< 1: longer).

    Returns:
        ``{"SOLVER.MAX_ITER": ..., "SOLVER.STEPS": (...), "SOLVER.WARMUP_ITERS": ...,
        "SOLVER.CHECKPOINT_PERIOD": ..., "TEST.EVAL_PERIOD": ..., "TEST.VAL_LOSS.PERIOD": ...}``.
    """
    s, test = cfg.SOLVER, cfg.TEST
    max_iter = _iters(s.MAX_ITER / factor)
    steps = sorted({_iters(step / factor) for step in s.STEPS})
    keys: Dict[str, object] = {
        "SOLVER.MAX_ITER": max_iter,
        "SOLVER.STEPS": tuple(step for step in steps if step < max_iter),
        "SOLVER.WARMUP_ITERS": int(round(s.WARMUP_ITERS / factor)),
    }
    periods = (("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD), ("TEST.EVAL_PERIOD", test.EVAL_PERIOD),
               ("TEST.VAL_LOSS.PERIOD", test.VAL_LOSS.PERIOD))
    for key, period in periods:
        keys[key] = _iters(period / factor) if period > 0 else period
    return keys


def scale_schedule(cfg: CfgNode, num_processes: int) -> Tuple[CfgNode, List[tuple]]:
    """Return a copy of ``cfg`` whose schedule is scaled to the batch actually used.

    Args:
        cfg: a config with fpn_plugin's keys (``add_fpn_plugin_config``).
        num_processes: the number of training processes (devices), all machines together.

    Returns:
        (cfg, rows): the scaled config, and (key, config value, value used) rows for
        :func:`format_table`. The scaled config has ``SOLVER.REFERENCE_BATCH_SIZE`` set to the
        batch used, so scaling it again changes nothing.

    Raises:
        ValueError: inconsistent batch keys; the message names the keys and a fix.
    """
    s = cfg.SOLVER
    if s.REFERENCE_WORLD_SIZE:
        raise ValueError(
            f"SOLVER.REFERENCE_WORLD_SIZE is {s.REFERENCE_WORLD_SIZE}: detectron2's own worker "
            "scaling conflicts with fpn_plugin's batch scaling. Set SOLVER.REFERENCE_WORLD_SIZE 0 "
            f"and SOLVER.REFERENCE_BATCH_SIZE {s.IMS_PER_BATCH} (the batch the schedule was "
            "written for), then choose SOLVER.IMS_PER_DEVICE and SOLVER.ACCUMULATION_STEPS."
        )
    if s.ACCUMULATION_STEPS < 1:
        raise ValueError(
            f"SOLVER.ACCUMULATION_STEPS is {s.ACCUMULATION_STEPS}; it must be >= 1 "
            "(1 = no gradient accumulation)."
        )
    if s.IMS_PER_DEVICE < 0 or s.REFERENCE_BATCH_SIZE < 0:
        raise ValueError("SOLVER.IMS_PER_DEVICE and SOLVER.REFERENCE_BATCH_SIZE must be >= 0 (0 = derived).")
    if s.IMS_PER_DEVICE > 0:
        per_device = s.IMS_PER_DEVICE
    elif s.IMS_PER_BATCH % num_processes == 0:
        per_device = s.IMS_PER_BATCH // num_processes
    else:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({s.IMS_PER_BATCH}) is not divisible by the {num_processes} "
            "processes. Set SOLVER.IMS_PER_DEVICE to the images each device should take."
        )
    reference = s.REFERENCE_BATCH_SIZE or s.IMS_PER_BATCH
    actual = num_processes * per_device * s.ACCUMULATION_STEPS
    factor = actual / reference
    if s.LR_SCALING not in _LR_RULES:
        raise ValueError(
            f"SOLVER.LR_SCALING is {s.LR_SCALING!r}; choose one of {sorted(_LR_RULES)}."
        )

    old = cfg
    cfg = cfg.clone()
    cfg.defrost()
    n = cfg.SOLVER
    n.IMS_PER_BATCH = num_processes * per_device  # detectron2's loader: images per forward, all processes
    n.IMS_PER_DEVICE = per_device
    n.REFERENCE_BATCH_SIZE = actual
    if factor != 1.0:
        n.BASE_LR = s.BASE_LR * _LR_RULES[s.LR_SCALING](factor)
        cfg.merge_from_list([v for item in scale_iterations(old, factor).items() for v in item])

    rows = [
        ("total batch (images/step)", reference, actual),
        ("= processes x images/device x accumulation", "", f"{num_processes} x {per_device} x {s.ACCUMULATION_STEPS}"),
        ("scale factor", "", f"{factor:g}"),
        ("SOLVER.BASE_LR", s.BASE_LR, n.BASE_LR),
        ("SOLVER.MAX_ITER", s.MAX_ITER, n.MAX_ITER),
        ("SOLVER.STEPS", tuple(s.STEPS), tuple(n.STEPS)),
        ("SOLVER.WARMUP_ITERS", s.WARMUP_ITERS, n.WARMUP_ITERS),
        ("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, n.CHECKPOINT_PERIOD),
        ("TEST.EVAL_PERIOD", old.TEST.EVAL_PERIOD, cfg.TEST.EVAL_PERIOD),
        ("TEST.VAL_LOSS.PERIOD", old.TEST.VAL_LOSS.PERIOD, cfg.TEST.VAL_LOSS.PERIOD),
    ]
    if old.is_frozen():
        cfg.freeze()
    return cfg, rows


def iterations_per_epoch(num_images: int, total_batch: int) -> int:
    """Optimizer steps needed to see ``num_images`` once with ``total_batch`` images per step."""
    return max(1, math.ceil(num_images / total_batch))


def apply_epochs(cfg: CfgNode, num_images: int) -> Tuple[CfgNode, int]:
    """Turn ``SOLVER.EPOCHS``/``STEPS_EPOCHS`` into iterations, for a scaled config.

    Args:
        cfg: a config passed through :func:`scale_schedule` (its
            ``SOLVER.REFERENCE_BATCH_SIZE`` is the batch per optimizer step); otherwise
            ``SOLVER.IMS_PER_BATCH`` is taken as the batch per step.
        num_images: the number of training images (after detectron2's filtering).

    Returns:
        (cfg, iterations per epoch). When ``SOLVER.EPOCHS`` is 0 the config is unchanged.
    """
    if num_images <= 0:
        raise ValueError(f"The training set has {num_images} images; check DATASETS.TRAIN.")
    # A config not passed through scale_schedule: its own batch is the batch per step.
    batch = cfg.SOLVER.REFERENCE_BATCH_SIZE or cfg.SOLVER.IMS_PER_BATCH
    per_epoch = iterations_per_epoch(num_images, batch)
    s = cfg.SOLVER
    if s.EPOCHS <= 0:
        if s.STEPS_EPOCHS:
            raise ValueError(
                f"SOLVER.STEPS_EPOCHS is {tuple(s.STEPS_EPOCHS)} but SOLVER.EPOCHS is 0: set "
                "SOLVER.EPOCHS to train in epochs, or give the decay points in SOLVER.STEPS."
            )
        return cfg, per_epoch
    bad = [e for e in s.STEPS_EPOCHS if not 0 < e < s.EPOCHS]
    if bad:
        raise ValueError(
            f"SOLVER.STEPS_EPOCHS {tuple(s.STEPS_EPOCHS)} has points outside (0, SOLVER.EPOCHS="
            f"{s.EPOCHS}): {bad}. Give each LR decay point as an epoch inside the training."
        )
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    max_iter = _iters(s.EPOCHS * per_epoch)
    if s.STEPS_EPOCHS:
        steps = tuple(_iters(e * per_epoch) for e in s.STEPS_EPOCHS)
    else:  # keep the decay points at the same fraction of the training
        steps = tuple(_iters(step * max_iter / s.MAX_ITER) for step in s.STEPS)
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = steps
    cfg.SOLVER.EPOCHS = 0.0  # now expressed in iterations: applying again changes nothing
    cfg.SOLVER.STEPS_EPOCHS = ()
    if frozen:
        cfg.freeze()
    return cfg, per_epoch


def epoch_rows(rows: List[tuple], epochs: float, cfg: CfgNode, per_epoch: int) -> List[tuple]:
    """:func:`scale_schedule`'s rows with what :func:`apply_epochs` made of ``SOLVER.EPOCHS``.

    Args:
        rows: the rows of :func:`scale_schedule`.
        epochs: ``SOLVER.EPOCHS`` of the config (0: rows returned unchanged).
        cfg: the config :func:`apply_epochs` returned.
        per_epoch: its iterations per epoch.
    """
    if epochs <= 0:
        return rows
    used = {"SOLVER.MAX_ITER": cfg.SOLVER.MAX_ITER, "SOLVER.STEPS": tuple(cfg.SOLVER.STEPS)}
    out = [(key, config, used.get(key, value)) for key, config, value in rows]
    out.insert(
        [key for key, _, _ in out].index("SOLVER.MAX_ITER"),
        ("SOLVER.EPOCHS", epochs, f"{epochs:g} x {per_epoch} iterations/epoch"),
    )
    return out


def format_table(rows: List[tuple]) -> str:
    """Render (key, config value, value used) rows as an aligned text table."""
    # Every cell as str() gives it: tabulate's number parsing would reformat 0.005 or (60, 80).
    cells = [tuple(str(c) for c in row) for row in rows]
    return tabulate(cells, headers=("key", "config", "used"), tablefmt="simple", disable_numparse=True)
