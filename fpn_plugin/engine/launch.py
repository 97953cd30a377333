"""Multi-process training: detectron2's launcher, torchrun, or SLURM's srun.

Three ways to start a job, one process per GPU (or per CPU process with gloo):

* detectron2's launcher (``--num-gpus N --num-machines M --machine-rank R --dist-url URL``):
  :func:`launch` starts the N processes of this machine. detectron2 0.6's ``launch`` asserts
  CUDA and always uses NCCL, so :func:`launch` hands GPU jobs to it and runs CPU jobs itself
  with the same arguments and the same process-group setup, with gloo. On CPU,
  ``num_processes_per_machine`` (``--num-gpus``) is the number of processes.
* ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) has already started every process:
  :func:`launch` sees it and joins the process group with ``env://`` instead of starting
  processes.
* ``srun`` (SLURM, one task per GPU): the same, from SLURM's variables. Both are read by
  :func:`~fpn_plugin.engine.launch_environment.launched_by_environment`.

Whichever started it, every process then does what detectron2's worker does: the process group
(NCCL on GPUs with this process's GPU selected, gloo on CPU), detectron2's group of the
processes on the same machine, a barrier, then ``main_func(*args)``. A collective that fails or
times out (another process died, a machine became unreachable) ends the process with a
:class:`DistributedJobFailed` that says so, instead of hanging.
"""
import functools
import logging
import os
import re
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..device import resolve_device
from .launch_environment import EnvironmentLaunch, how_to_size, launched_by_environment

__all__ = ["launch", "DistributedJobFailed", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)


class DistributedJobFailed(RuntimeError):
    """A collective operation failed or timed out: another process of the job is gone or stuck."""


def launch(
    main_func,
    num_processes_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = None,
    args=(),
    device: str = "auto",
    timeout=DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in every process of a (possibly multi-machine) job.

    Args:
        main_func, num_machines, machine_rank, dist_url, args, timeout: as detectron2's
            ``launch``. ``dist_url`` may be "auto" (a free port on localhost, one machine).
            ``timeout`` bounds every collective operation: a process whose peers are gone
            stops with :class:`DistributedJobFailed` after at most that long.
        num_processes_per_machine: GPUs per machine on CUDA; processes per machine on CPU.
        device: ``MODEL.DEVICE`` ("auto", "cpu", "cuda" ...), resolved with ``resolve_device``.

    Under torchrun or srun (:func:`launched_by_environment`) this process is already one of the
    job's: it joins the others with ``env://``; ``num_processes_per_machine`` and
    ``num_machines`` must then be 1 (srun with ``--num-machines`` > 1: detectron2's launcher,
    one srun task per machine, as without srun).
    """
    device = resolve_device(device)
    if num_processes_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"--num-gpus ({num_processes_per_machine}) and --num-machines ({num_machines}) must be >= 1."
        )
    if isinstance(timeout, (int, float)):
        timeout = timedelta(seconds=timeout)
    on_cuda = torch.device(device).type == "cuda"
    job = launched_by_environment()
    if job is not None and not (job.launcher == "srun" and num_machines > 1):
        if num_processes_per_machine > 1 or num_machines > 1:
            raise ValueError(
                f"{job.launcher} already started the {job.world_size} processes of this job "
                f"({job.local_world_size} on this machine): drop --num-gpus "
                f"{num_processes_per_machine} / --num-machines {num_machines} (set the number of "
                f"processes with {how_to_size(job.launcher)})."
            )
        if job.world_size == 1:
            return main_func(*args)
        return _join_environment_job(job, main_func, args, on_cuda, timeout)
    if on_cuda:
        if num_processes_per_machine > torch.cuda.device_count():
            raise ValueError(
                f"--num-gpus {num_processes_per_machine} but this machine has "
                f"{torch.cuda.device_count()} CUDA GPUs."
            )
        wrapped = functools.partial(_call_main, main_func, timeout)
        return d2_launch(
            wrapped, num_processes_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
    world_size = num_machines * num_processes_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://<host of rank 0>:<port>.")
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_processes_per_machine == 1:
        # One process on this machine (of several machines): this one, not a copy of it started
        # only to run the same worker.
        return _cpu_worker(0, main_func, world_size, 1, machine_rank, dist_url, args, timeout)
    mp.spawn(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout):
    _worker("gloo", dist_url, machine_rank * per_machine + local_rank, world_size, per_machine,
            main_func, args, timeout)


def _join_environment_job(job: EnvironmentLaunch, main_func, args, on_cuda: bool, timeout):
    # env:// reads these; srun sets none of them, torchrun all. Libraries asking for the local
    # rank find it too.
    os.environ.update(MASTER_ADDR=job.master_addr, MASTER_PORT=str(job.master_port), RANK=str(job.rank),
                      WORLD_SIZE=str(job.world_size), LOCAL_RANK=str(job.local_rank),
                      LOCAL_WORLD_SIZE=str(job.local_world_size))
    if on_cuda:
        if job.local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"{job.launcher} started {job.local_world_size} processes on this machine, but this one "
                f"(local rank {job.local_rank}) sees {torch.cuda.device_count()} CUDA GPUs: each process "
                "takes the GPU of its local rank, so let every process see all GPUs of its machine "
                "(srun: --gres=gpu:<GPUs per node>, not --gpus-per-task / a CUDA_VISIBLE_DEVICES per task)."
            )
        torch.cuda.set_device(job.local_rank)
    _worker("nccl" if on_cuda else "gloo", "env://", job.rank, job.world_size, job.local_world_size,
            main_func, args, timeout, launcher=job.launcher)


def _worker(backend, init_method, rank, world_size, per_machine, main_func, args, timeout, launcher=None):
    """detectron2's ``_distributed_worker`` after the process exists, for any backend and launcher."""
    if backend == "gloo" and "OMP_NUM_THREADS" not in os.environ:
        # Processes on one machine share its cores; without this each would start one thread
        # per core and they would slow each other down. An explicit OMP_NUM_THREADS wins.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_machine))
    try:
        dist.init_process_group(
            backend=backend, init_method=init_method, world_size=world_size, rank=rank, timeout=timeout
        )
    except Exception:
        where = init_method if init_method != "env://" else "env:// (MASTER_ADDR={} MASTER_PORT={})".format(
            os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"))
        logger.error("Process group URL: {}{}".format(where, f", started by {launcher}" if launcher else ""))
        raise
    _create_local_process_group(per_machine)
    try:
        comm.synchronize()
        _call_main(main_func, timeout, *args)
    finally:
        dist.destroy_process_group()


def _create_local_process_group(per_machine: int):
    """detectron2's group of the processes on this machine (``comm.get_local_rank`` etc.)."""
    create = getattr(comm, "create_local_process_group", None)  # detectron2 > 0.6
    if create is not None:
        return create(per_machine)
    assert comm._LOCAL_PROCESS_GROUP is None
    machine_rank = dist.get_rank() // per_machine
    for i in range(dist.get_world_size() // per_machine):
        group = dist.new_group(list(range(i * per_machine, (i + 1) * per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _is_communication_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset", "Timed out",
                            "timed out", "Broken pipe", "Socket Timeout")
    )


def _call_main(main_func, timeout, *args):
    """``main_func(*args)``; a failed collective becomes a :class:`DistributedJobFailed` saying why."""
    try:
        return main_func(*args)
    except Exception as e:
        if not (dist.is_initialized() and dist.get_world_size() > 1 and _is_communication_failure(e)):
            raise
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        # gloo's and NCCL's first line, without the "[.../pair.cc:561] " source location.
        first = (str(e).strip().splitlines() or [""])[0]
        cause = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", first)[:300]
        message = (
            f"Rank {dist.get_rank()} of {dist.get_world_size()}: a collective operation with the other "
            f"processes failed or timed out (timeout {seconds:g} s): a process of this job probably died "
            "or a machine is unreachable; see the first error in the other processes' output. Stopping. "
            "Continue from the last checkpoint with --resume. "
            f"({type(e).__name__}: {cause})"
        )
        logger.error(message)
        raise DistributedJobFailed(message) from e
