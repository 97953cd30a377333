"""Checkpoints written atomically: a kill at any moment leaves the previous one intact."""
import glob
import os
import tempfile

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint import PluginCheckpointer

__all__ = ["AtomicSaveMixin", "AtomicDetectionCheckpointer", "AtomicPluginCheckpointer", "atomic_write"]


def atomic_write(path: str, write_fn, mode: str = "wb") -> None:
    """Write ``path`` through ``write_fn(file)`` so that it is either old or complete.

    The data go to a temporary file in the same directory (same file system, so the rename
    is atomic), are flushed to disk, then replace ``path`` with ``os.replace``. A process
    killed half-way leaves a stray ``.tmp`` file, never a truncated ``path``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicSaveMixin:
    """Makes an fvcore ``Checkpointer`` subclass write its files atomically.

    Put it first in the bases, e.g. ``class C(AtomicSaveMixin, DetectionCheckpointer)``:
    ``save`` and ``tag_last_checkpoint`` are replaced, loading is untouched. The file name
    ``last_checkpoint`` points to is only updated after the checkpoint itself is complete.
    Only local paths are supported (``save_dir`` must be a directory on this machine).
    """

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(save_file))
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")

    def remove_interrupted_writes(self) -> list:
        """Delete the temporary files of writes a killed process left (``<name>.pth.*.tmp``,
        up to a whole checkpoint each); logs and returns their paths. Call it before training
        starts, when no write is under way."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        stale = sorted(glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth.*.tmp"))
                       + glob.glob(os.path.join(glob.escape(self.save_dir), "last_checkpoint.*.tmp")))
        for path in stale:
            os.remove(path)
        if stale:
            self.logger.info("Removed %d temporary files of interrupted checkpoint writes: %s",
                             len(stale), ", ".join(os.path.basename(p) for p in stale))
        return stale


class AtomicDetectionCheckpointer(AtomicSaveMixin, DetectionCheckpointer):
    """detectron2's ``DetectionCheckpointer`` (weights of any detectron2 format) with atomic saves."""


class AtomicPluginCheckpointer(AtomicSaveMixin, PluginCheckpointer):
    """fpn_plugin's checkpointer (torchvision, MSRA, VGG and detectron2 weights in
    ``MODEL.WEIGHTS``, with their pixel-format checks) with atomic saves: the trainer's."""
