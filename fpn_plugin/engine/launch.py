"""Multi-process training on GPUs (NCCL, detectron2's ``launch``) or on CPUs (gloo).

detectron2 0.6's ``launch`` asserts CUDA and always uses NCCL. :func:`launch` hands GPU jobs to
it, and runs CPU jobs itself with the same arguments and the same process-group setup, with
gloo. On CPU, ``num_processes_per_machine`` (``--num-gpus``) is the number of processes.
"""
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..device import resolve_device

__all__ = ["launch", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


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
        num_processes_per_machine: GPUs per machine on CUDA; processes per machine on CPU.
        device: ``MODEL.DEVICE`` ("auto", "cpu", "cuda" ...), resolved with ``resolve_device``.
    """
    device = resolve_device(device)
    if num_processes_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"--num-gpus ({num_processes_per_machine}) and --num-machines ({num_machines}) must be >= 1."
        )
    if torch.device(device).type == "cuda":
        if num_processes_per_machine > torch.cuda.device_count():
            raise ValueError(
                f"--num-gpus {num_processes_per_machine} but this machine has "
                f"{torch.cuda.device_count()} CUDA GPUs."
            )
        return d2_launch(
            main_func, num_processes_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
    world_size = num_machines * num_processes_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://<host of rank 0>:<port>.")
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * per_machine + local_rank
    # Processes on one machine share its cores; without this each would start one thread per
    # core and they would slow each other down.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_machine))
    try:
        dist.init_process_group(
            backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error("Process group URL: {}".format(dist_url))
        raise
    # Same as detectron2's worker: the group of the processes on this machine.
    assert comm._LOCAL_PROCESS_GROUP is None
    for i in range(world_size // per_machine):
        ranks = list(range(i * per_machine, (i + 1) * per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
