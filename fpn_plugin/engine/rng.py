"""The state of every random number generator training uses, to save, restore and fence off."""
import contextlib
import random

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "preserve_rng_state"]


def get_rng_state() -> dict:
    """Return the states of Python's, NumPy's, torch's CPU and torch's CUDA generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # As tensors and numbers: torch.load's default weights_only=True refuses NumPy arrays.
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A resume on fewer GPUs restores the ones it has.
        for i, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)


@contextlib.contextmanager
def preserve_rng_state():
    """Run the block without consuming random numbers of the training loop.

    The validation loss samples proposals and flips images at random; without this fence a
    run with it would draw different training samples than one without it, and a resume
    (whose checkpoint was saved before the hook ran) would not replay the same training.
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
