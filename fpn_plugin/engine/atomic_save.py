"""Checkpoints written atomically: a kill at any moment leaves the previous one intact.

fvcore's ``Checkpointer.save`` and ``tag_last_checkpoint`` write through the checkpointer's
``path_manager``; :class:`AtomicSaveMixin` gives them one whose files opened for writing land
under a temporary name and replace the target only once complete. fvcore's own code does the
saving, so what a checkpoint holds follows fvcore.
"""
import glob
import os
import tempfile

from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint import PluginCheckpointer

__all__ = ["AtomicDetectionCheckpointer", "AtomicPluginCheckpointer", "AtomicSaveMixin"]

# The process's umask, read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0)
os.umask(_UMASK)


class AtomicFile:
    """A file opened for writing under a temporary name that replaces ``path`` on a clean close.

    The data go to a temporary file in the same directory (same file system, so the rename is
    atomic), are flushed to disk, then replace ``path`` with ``os.replace``. An exception
    before the close removes the temporary file; a process killed half-way leaves a stray
    ``<name>.<random>.tmp``, never a truncated ``path``. Other attributes are the file's.
    """

    def __init__(self, path: str, mode: str = "wb", **kwargs):
        """
        Args:
            path: the local file to write.
            mode, kwargs: as for ``open`` (a mode that writes: "w", "wb").
        """
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        # mkstemp makes the file private (0600); a checkpoint gets what open() would give it,
        # so others of the group can read it on a shared cluster as with fvcore's own save.
        os.chmod(self.tmp, 0o666 & ~_UMASK)
        self.file = os.fdopen(fd, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def close(self) -> None:
        """Finish the write: flush to disk and put the file at ``path``."""
        if self.file.closed:
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Abandon the write: ``path`` keeps what it held."""
        self.file.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class _AtomicWrites:
    """A path manager whose ``open`` for writing gives an :class:`AtomicFile`; the rest is
    the wrapped manager's (reading, ``exists``, ``get_local_path`` ...)."""

    def __init__(self, manager):
        self.manager = manager

    def open(self, path: str, mode: str = "r", **kwargs):
        if "w" in mode:
            return AtomicFile(path, mode, **kwargs)
        return self.manager.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self.manager, name)


class AtomicSaveMixin:
    """Makes an fvcore ``Checkpointer`` subclass write its files atomically.

    Put it first in the bases, e.g. ``class C(AtomicSaveMixin, DetectionCheckpointer)``:
    whatever path manager the checkpointer is given writes atomically, so fvcore's ``save``
    and ``tag_last_checkpoint`` do; loading is untouched. ``save`` writes the checkpoint
    before ``last_checkpoint``, so that file only ever names a complete checkpoint.
    Only local paths are supported (``save_dir`` must be a directory on this machine).
    """

    @property
    def path_manager(self):
        return self._atomic_path_manager

    @path_manager.setter
    def path_manager(self, manager) -> None:
        # fvcore's and detectron2's __init__ assign their path manager: both get wrapped.
        self._atomic_path_manager = manager if isinstance(manager, _AtomicWrites) else _AtomicWrites(manager)

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
