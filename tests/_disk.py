"""How much disk the tests need in their temporary folder, checked before the first test."""
import shutil

import pytest

# The most a run holds in its temporary folder at once (measured: 1.9 GB, the checkpoint tests'
# weight files in the real formats), with a margin. Below it a run would fail half-way with
# "iostream error" / "unexpected pos" from torch.save instead of saying why.
MIN_FREE_DISK_GB = 4


def free_disk_gb(path) -> float:
    return shutil.disk_usage(path).free / 1e9


def require_free_disk(path, needed_gb=MIN_FREE_DISK_GB):
    """Stop the run before the first test when ``path`` has less than ``needed_gb`` free."""
    free = free_disk_gb(path)
    if free < needed_gb:
        raise pytest.UsageError(
            f"only {free:.1f} GB free at {path}; the tests need about {needed_gb} GB there for the "
            f"weight files they write. Free some space, or point --basetemp at a bigger disk.")
