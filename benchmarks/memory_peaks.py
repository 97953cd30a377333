"""Peak memory of one call, the two ways the benchmarks measure it.

- :class:`PeakMemory`: resident memory (CPU: the kernel's high-water mark, VmHWM, reset before
  the call; sampled every ms where Linux does not allow the reset) or CUDA's
  ``max_memory_allocated``, above the level at the call's start. What users see, but on CPU it
  moves between runs of the same code with what glibc's heap keeps and returns
  (:func:`freed_memory_returned` narrows that while measuring).
- :func:`tensor_peak`: the most bytes of CPU tensors live at once, from every allocation and
  free torch's profiler records: exact and the same on every run.
"""
import contextlib
import ctypes
import os
import sys
import threading
from typing import Callable

import torch

__all__ = ["PeakMemory", "freed_memory_returned", "peak_memory_method", "tensor_peak"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@contextlib.contextmanager
def freed_memory_returned():
    """While measuring memory, glibc returns each freed block over 64 KiB to the OS at once, so
    resident memory follows what is in use; afterwards its largest adaptive thresholds (32 MiB),
    so that timing runs see the usual allocator. A no-op without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        yield
        return
    for key in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD):
        libc.mallopt(key, 64 * 1024)
    try:
        yield
    finally:
        for key in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD):
            libc.mallopt(key, 32 * 1024 * 1024)


def _trim_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Set the kernel's record of this process's peak resident memory (VmHWM) to what is
    resident now (Linux >= 4.0); False where /proc does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise OSError("no VmHWM in /proc/self/status")


def peak_memory_method(device: str) -> str:
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated above the allocation before each call"
    how = ("the kernel's high-water mark (VmHWM), reset before each call" if _reset_peak_rss()
           else "sampled every ms (/proc/self/clear_refs is not writable here)")
    return f"resident memory above its level before each call: {how}"


class PeakMemory:
    """Peak memory of a block above its start: CUDA allocated, or resident, from the kernel's
    high-water mark where it can be reset (exact: a sampler misses peaks shorter than its
    period) and else sampled every ms."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.available = self.cuda or os.path.exists("/proc/self/statm")
        self.peak = float("nan")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        elif self.available:
            _trim_heap()  # what earlier calls freed is not counted as this one's
            self.start = self.high = _rss()
            self.kernel_peak = _reset_peak_rss()
            if not self.kernel_peak:
                self.done = threading.Event()
                self.thread = threading.Thread(target=self._sample, daemon=True)
                self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.001):
            self.high = max(self.high, _rss())

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        elif self.available and self.kernel_peak:
            self.peak = _peak_rss() - self.start
        elif self.available:
            self.done.set()
            self.thread.join()
            self.peak = max(self.high, _rss()) - self.start


@contextlib.contextmanager
def _profiler_chatter_hidden():
    """File descriptor 2 to /dev/null inside: on every profiled call kineto prints
    "profiler_start/stop" lines (and, at its first, a "no GPU" error) and c10 an expected
    "Memory block of unknown size" warning from C++, which no log level silences. An exception still prints after it, to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tensor_peak(run: Callable[[], object], frees_last_calls: bool = True) -> float:
    """Most bytes of CPU tensors live at once during ``run()``, above their level at its start.

    Every allocation and free as torch's profiler reports it: exact, and free of what moves
    resident memory between runs (the heap's cached and returned pages). The profiler gives a
    free its size only for a block allocated while a profiler ran, so where ``run`` frees what
    its last call kept (``frees_last_calls``: a training step frees the last gradients) it
    goes once under the profiler unmeasured first; an inference call, which keeps nothing,
    is measured at once. NaN where this torch's profiler has no such record.
    """
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2 if frees_last_calls else 1):  # the last one measured
        with _profiler_chatter_hidden(), profile(
            activities=[ProfilerActivity.CPU], profile_memory=True
        ) as prof:
            run()
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        return float("nan")
    cpu = torch._C._autograd.DeviceType.CPU
    changes = sorted((e.start_ns(), e.nbytes()) for e in results.events()
                     if e.name() == "[memory]" and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return float(peak)
