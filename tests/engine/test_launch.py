"""Several training processes on CPU, with gloo (detectron2 0.6's launch is CUDA/NCCL only); torchrun's and
srun's environments recognised; a stuck process makes the others stop after the timeout."""
import json
import os
import subprocess
import sys
import time

import pytest

from _tiny import tiny_cfg

from fpn_plugin.engine.launch import launch
from fpn_plugin.engine import launch_environment
from fpn_plugin.engine.launch_environment import EnvironmentLaunch, first_slurm_host, launched_by_environment

launch_module = sys.modules["fpn_plugin.engine.launch"]  # fpn_plugin.engine.launch is also the function

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_two_gloo_processes_both_step_and_write_one_checkpoint(tmp_path):
    cfg = tiny_cfg(str(tmp_path / "out"), "launch_train", max_iter=3)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.SOLVER.IMS_PER_BATCH = 2  # one image per process
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.dump())
    record = tmp_path / "record.jsonl"
    env = dict(os.environ, FPN_TEST_DATASETS="launch_train", FPN_TEST_DATA_ROOT=str(tmp_path / "data"),
               FPN_TEST_RECORD=str(record))
    # The parent registers (writes) the images first: the two processes only read them.
    sys.path.insert(0, HERE)
    from _tiny import register_synthetic

    register_synthetic("launch_train", str(tmp_path / "data"))
    run = subprocess.run(
        [sys.executable, os.path.join(HERE, "train_driver.py"), "direct", "--num-gpus", "2",
         "--dist-url", "auto", "--config-file", str(config)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    finals = [json.loads((out / f"final_rank{r}.json").read_text()) for r in (0, 1)]
    for final in finals:
        assert (final["world_size"], final["start_iter"], final["iter"]) == (2, 0, 3)
        assert final["optimizer_states"] > 0  # SGD momentum buffers: the optimizer stepped
    # DistributedDataParallel kept the two copies of the model identical.
    assert finals[0]["weights_checksum"] == pytest.approx(finals[1]["weights_checksum"], rel=1e-9)
    steps = [json.loads(line) for line in open(record)]
    assert sorted((s["rank"], s["iter"]) for s in steps) == [(r, i) for r in (0, 1) for i in range(3)]
    # Only the main process writes checkpoints: one of each, no leftovers of a second writer.
    assert sorted(p.name for p in out.iterdir() if "model" in p.name) == ["model_0000001.pth", "model_final.pth"]
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert "World size: 2" in run.stdout


# --- torchrun and srun: recognised from the environment, joined with env:// ----------------------

TORCHRUN = {"TORCHELASTIC_RUN_ID": "x", "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4",
            "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
SRUN = {"SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-08]"}


def test_no_launcher_environment_means_detectron2s_launcher():
    assert launched_by_environment({}) is None
    # An sbatch script's own environment (no srun step) and a one-task srun are not a launch.
    assert launched_by_environment({"SLURM_JOB_ID": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "16",
                                    "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}) is None
    assert launched_by_environment({**SRUN, "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_TASKS_PER_NODE": "1"}) is None


def test_torchrun_environment():
    assert launched_by_environment(TORCHRUN) == EnvironmentLaunch("torchrun", 3, 1, 4, 2, 1, "node0", 29500)
    other = {k: v for k, v in TORCHRUN.items() if k not in ("TORCHELASTIC_RUN_ID", "GROUP_RANK")}
    assert launched_by_environment(other) == EnvironmentLaunch("env://", 3, 1, 4, 2, 1, "node0", 29500)
    with pytest.raises(RuntimeError, match="MASTER_PORT is not set"):
        launched_by_environment({k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"})


def test_srun_environment(monkeypatch):
    monkeypatch.setattr(launch_environment.shutil, "which", lambda name: None)  # no scontrol here
    job = launched_by_environment(SRUN)
    assert job == EnvironmentLaunch("srun", 5, 1, 8, 4, 1, "gpu07", 15000 + 123456 % 20000)
    given = launched_by_environment({**SRUN, "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29400"})
    assert (given.master_addr, given.master_port) == ("10.0.0.7", 29400)
    assert first_slurm_host("gpu[03-05,09],cpu1") == "gpu03"
    assert first_slurm_host("login2,cpu1") == "login2"
    with pytest.raises(RuntimeError, match="the same number on every node"):
        launched_by_environment({**SRUN, "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_TASKS_PER_NODE": "2,1"})
    bare = {k: v for k, v in SRUN.items() if "NODELIST" not in k}
    with pytest.raises(RuntimeError, match="set MASTER_ADDR"):
        launched_by_environment(bare)


def test_under_torchrun_num_gpus_is_an_error_and_one_process_runs_main(monkeypatch):
    for key, value in TORCHRUN.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=r"torchrun already started the 4 processes .* drop --num-gpus 2"):
        launch(print, 2, device="cpu")
    with pytest.raises(ValueError, match="--num-machines 2"):
        launch(print, 1, num_machines=2, device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert launch(lambda x: x + 1, 1, args=(1,), device="cpu") == 2  # no process group for one process


def test_srun_with_num_machines_keeps_detectron2s_launcher(monkeypatch):
    # srun with one task per machine, each starting its GPUs' processes with detectron2's launcher.
    for key, value in {**SRUN, "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}.items():
        monkeypatch.setenv(key, value)
    calls = []
    monkeypatch.setattr(launch_module.mp, "spawn", lambda fn, nprocs, args, daemon: calls.append((nprocs, args[1:5])))
    launch(print, 4, num_machines=2, machine_rank=1, dist_url="tcp://gpu07:1234", device="cpu")
    assert calls == [(4, (8, 4, 1, "tcp://gpu07:1234"))]


HANG = """
import sys, time
import torch, torch.distributed as dist
import fpn_plugin
from fpn_plugin.engine.launch import launch

def main(seconds):
    if dist.get_rank() == 1:
        print("SLEEPING", flush=True)
        time.sleep(seconds)
    dist.all_reduce(torch.ones(1))

if __name__ == "__main__":
    launch(main, 1, num_machines=2, machine_rank=int(sys.argv[1]), dist_url=sys.argv[2], args=(120,),
           device="cpu", timeout=float(sys.argv[3]))
"""


@pytest.mark.slow
def test_a_stuck_machine_makes_the_other_stop_after_the_timeout(tmp_path):
    from detectron2.engine.launch import _find_free_port

    script = tmp_path / "hang.py"
    script.write_text(HANG)
    url = f"tcp://127.0.0.1:{_find_free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID"):
        env.pop(key, None)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), url, "4"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True) for r in (0, 1)]
    try:
        for line in procs[1].stdout:
            if "SLEEPING" in line:
                break
        start = time.monotonic()
        out, _ = procs[0].communicate(timeout=100)
        waited = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    message = next((line for line in out.splitlines() if "DistributedJobFailed:" in line), "")
    print(f"\n[multi-machine] stuck machine 1: machine 0 stopped {waited:.1f} s later (timeout 4 s): {message}")
    assert procs[0].returncode != 0
    assert waited < 60  # the timeout, not machine 1's 120 s sleep
    assert "DistributedJobFailed: Rank 0 of 2: a collective operation with the other processes failed or " \
           "timed out (timeout 4 s): a process of this job probably died or a machine is unreachable" in out, out
