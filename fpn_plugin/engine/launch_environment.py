"""Jobs that torchrun or SLURM's srun started: this process's place in them, from the environment.

:func:`launched_by_environment` reads the variables those launchers set (torchrun's ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; srun's
``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``, ``SLURM_STEP_NUM_TASKS``,
``SLURM_STEP_TASKS_PER_NODE``), so that :func:`fpn_plugin.engine.launch.launch` joins the job
instead of starting processes. ``MASTER_ADDR`` under srun is the first host of the step's node
list unless set, ``MASTER_PORT`` derived from the job id unless set.
"""
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = ["EnvironmentLaunch", "launched_by_environment"]


@dataclass(frozen=True)
class EnvironmentLaunch:
    """This process's place in a job that torchrun or srun started (from the environment)."""

    launcher: str  # "torchrun", "srun", or "env://" (RANK/WORLD_SIZE/... set by another tool)
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int


def _int(env: Mapping[str, str], name: str, launcher: str) -> int:
    try:
        return int(env[name])
    except KeyError:
        raise RuntimeError(f"Started by {launcher}, but {name} is not set in the environment.") from None
    except ValueError:
        raise RuntimeError(f"Started by {launcher}, but {name}={env[name]!r} is not an integer.") from None


def _expand_tasks_per_node(value: str):
    """SLURM's "2(x3),1" -> [2, 2, 2, 1]."""
    counts = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise RuntimeError(f"Cannot read SLURM tasks per node {value!r}.")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list ("gpu[03-05,09],cpu1" -> "gpu03")."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise RuntimeError(f"Cannot read the SLURM node list {nodelist!r}: set MASTER_ADDR.")
    prefix, ranges = m.group(1), m.group(2)
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def launched_by_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[EnvironmentLaunch]:
    """This process's rank etc. if torchrun (or an env:// launcher) or srun started it, else None.

    torchrun: ``TORCHELASTIC_RUN_ID``, or ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` all set.
    srun: ``SLURM_PROCID`` with ``SLURM_STEP_NUM_TASKS`` > 1 (a batch script's own environment,
    or a one-task step, is not a multi-process launch: detectron2's launcher applies there).
    Raises RuntimeError naming the variable to set when the environment is incomplete.
    """
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" in env or all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env://"
        world_size = _int(env, "WORLD_SIZE", launcher)
        local_world_size = _int(env, "LOCAL_WORLD_SIZE", launcher)
        rank = _int(env, "RANK", launcher)
        node_rank = int(env["GROUP_RANK"]) if "GROUP_RANK" in env else rank // local_world_size
        addr = env.get("MASTER_ADDR")
        if not addr:
            raise RuntimeError(f"Started by {launcher}, but MASTER_ADDR is not set in the environment.")
        return EnvironmentLaunch(launcher, rank, _int(env, "LOCAL_RANK", launcher), world_size,
                                 local_world_size, node_rank, addr, _int(env, "MASTER_PORT", launcher))
    if "SLURM_PROCID" in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        launcher = "srun"
        world_size = _int(env, "SLURM_STEP_NUM_TASKS", launcher)
        per_node = _expand_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE")
                                          or env.get("SLURM_TASKS_PER_NODE") or str(world_size))
        if len(set(per_node)) != 1 or sum(per_node) != world_size:
            raise RuntimeError(
                f"srun started {world_size} tasks as {per_node} per node: detectron2 needs the same "
                "number on every node (srun --ntasks-per-node=<GPUs per node>)."
            )
        addr = env.get("MASTER_ADDR")
        if not addr:
            nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
            if not nodelist:
                raise RuntimeError("Started by srun, but neither MASTER_ADDR nor SLURM_STEP_NODELIST / "
                                   "SLURM_JOB_NODELIST is set: set MASTER_ADDR to the host of task 0.")
            addr = first_slurm_host(nodelist)
        if env.get("MASTER_PORT"):
            port = _int(env, "MASTER_PORT", launcher)
        elif env.get("SLURM_JOB_ID"):
            port = 15000 + int(env["SLURM_JOB_ID"]) % 20000  # the same in every task of the job
        else:
            raise RuntimeError("Started by srun, but neither MASTER_PORT nor SLURM_JOB_ID is set: set MASTER_PORT.")
        return EnvironmentLaunch(launcher, _int(env, "SLURM_PROCID", launcher), _int(env, "SLURM_LOCALID", launcher),
                                 world_size, per_node[0], _int(env, "SLURM_NODEID", launcher), addr, port)
    return None


def how_to_size(launcher: str) -> str:
    """The launcher's options that set the number of processes (for error messages)."""
    if launcher == "srun":
        return "srun --ntasks-per-node / --nodes"
    return "torchrun --nproc-per-node / --nnodes"
