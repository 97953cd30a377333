"""Two "machines" on one host, CPU and gloo, started the ways clusters start jobs.

Every run trains the same tiny model (2 processes, 1 image each, the same seed) and is compared
with the run of detectron2-style single launcher (``--num-gpus 2``):

* two ``train_net.py`` launchers, machine 0 and machine 1, meeting over TCP (``--num-machines 2``);
* two ``torchrun --nnodes 2`` node launchers meeting at a c10d rendezvous;
* two processes with srun's environment (SLURM_PROCID ...), as ``srun --ntasks 2`` starts them;
* machine 1 killed mid-run: machine 0 stops with a message, and ``--resume`` continues exactly.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _tiny import register_synthetic, tiny_cfg

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "train_driver.py")
DATASET = "mm_train"
MAX_ITER = 5
TIMEOUT = 300
# The launcher variables of the environment pytest runs in must not leak into the jobs.
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                 "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _free_port():
    from detectron2.engine.launch import _find_free_port

    return _find_free_port()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_machine")
    register_synthetic(DATASET, str(root / "data"))  # written once here; the processes only read
    register_synthetic("mm_val", str(root / "data"))
    cfg = tiny_cfg("", DATASET, max_iter=MAX_ITER)
    cfg.SOLVER.IMS_PER_BATCH = 2  # one image per process
    cfg.SOLVER.CHECKPOINT_PERIOD = 3  # model_0000002.pth, then model_final.pth (iteration 4)
    cfg.SOLVER.STEPS = (4,)
    config = root / "cfg.yaml"
    config.write_text(cfg.dump())
    return root, config


def _env(root, **extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("SLURM_")}
    env.update(FPN_TEST_DATASETS=f"{DATASET},mm_val", FPN_TEST_DATA_ROOT=str(root / "data"),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _train_net(config, out, *extra):
    return [DRIVER, "train_net", "--config-file", str(config), *extra, "OUTPUT_DIR", str(out)]


def _start(argv, env, log):
    # A session of its own: killing the "machine" kills its launcher and the processes it started.
    return subprocess.Popen([sys.executable, *argv], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _finish(procs, logs, timeout=TIMEOUT):
    try:
        rcs = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    texts = [open(log).read() for log in logs]
    for rc, text in zip(rcs, texts):
        assert rc == 0, text[-4000:]
    return texts


def _weights(out):
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)


def _max_difference(a, b):
    """Largest absolute difference over every float tensor of two checkpoints' models."""
    assert a["model"].keys() == b["model"].keys()
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    return max(float((a["model"][k].double() - b["model"][k].double()).abs().max())
               for k, v in a["model"].items() if v.is_floating_point())


def _checkpoints(out):
    return sorted(p.name for p in out.iterdir() if p.suffix == ".pth" or p.name == "last_checkpoint"
                  or ".tmp" in p.name)


CHECKPOINTS = ["last_checkpoint", "model_0000002.pth", "model_final.pth"]


def _report(name, seconds, difference=None):
    extra = "" if difference is None else f", largest weight difference to the single launcher {difference:.3g}"
    print(f"\n[multi-machine] {name}: {seconds:.1f} s{extra}")


@pytest.fixture(scope="module")
def single_launcher(job):
    """The reference: one launcher starting both processes (``--num-gpus 2``)."""
    root, config = job
    out = root / "single"
    start = time.monotonic()
    log = root / "single.log"
    (text,) = _finish([_start(_train_net(config, out, "--num-gpus", "2", "--dist-url", "auto"), _env(root), log)],
                      [log])
    _report("single launcher, 2 processes", time.monotonic() - start)
    assert "World size: 2" in text
    assert _checkpoints(out) == CHECKPOINTS
    return _weights(out)


def _finals(*outs):
    finals = {}
    for out in outs:
        for path in out.glob("final_rank*.json"):
            finals[path.name] = json.loads(path.read_text())
    return finals


@pytest.mark.slow
def test_two_machine_launchers_over_tcp_end_like_one_launcher(job, single_launcher):
    root, config = job
    url = f"tcp://127.0.0.1:{_free_port()}"
    # No shared file system between the "machines": machine 1 has an output directory of its own,
    # which must stay without checkpoints.
    outs = [root / "machine0", root / "machine1"]
    logs = [root / f"machine{r}.log" for r in (0, 1)]
    start = time.monotonic()
    procs = [_start(_train_net(config, outs[r], "--num-machines", "2", "--machine-rank", str(r),
                               "--dist-url", url), _env(root), logs[r]) for r in (0, 1)]
    texts = _finish(procs, logs)
    seconds = time.monotonic() - start
    finals = _finals(*outs)
    assert sorted(finals) == ["final_rank0.json", "final_rank1.json"]
    assert (outs[0] / "final_rank0.json").is_file() and (outs[1] / "final_rank1.json").is_file()
    assert all((f["world_size"], f["start_iter"], f["iter"]) == (2, 0, MAX_ITER) for f in finals.values())
    assert _checkpoints(outs[0]) == CHECKPOINTS
    assert _checkpoints(outs[1]) == []  # only rank 0 writes checkpoints
    assert "World size: 2" in texts[0]
    assert "2 x 1 x 1" in texts[0]  # the schedule table: processes x images/device x accumulation
    difference = _max_difference(single_launcher, _weights(outs[0]))
    _report("two machine launchers (--num-machines 2)", seconds, difference)


@pytest.mark.slow
def test_torchrun_two_nodes_end_like_one_launcher_and_evaluate(job, single_launcher):
    root, config = job
    out = root / "torchrun"
    endpoint = f"127.0.0.1:{_free_port()}"
    logs = [root / f"torchrun{r}.log" for r in (0, 1)]
    start = time.monotonic()
    procs = [
        _start(["-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(r),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "fpn17", "--max-restarts", "0",
                *_train_net(config, out)], _env(root), logs[r])
        for r in (0, 1)
    ]
    texts = _finish(procs, logs)
    seconds = time.monotonic() - start
    finals = _finals(out)
    assert sorted(finals) == ["final_rank0.json", "final_rank1.json"]
    assert all((f["world_size"], f["start_iter"], f["iter"]) == (2, 0, MAX_ITER) for f in finals.values())
    assert _checkpoints(out) == CHECKPOINTS  # one set: rank 0's (no temporary files of a second writer)
    both = "".join(texts)
    assert both.count("World size: 2") == 1  # rank 0 logs to the console, as with detectron2's launcher
    assert "2 x 1 x 1" in both
    difference = _max_difference(single_launcher, _weights(out))
    _report("torchrun --nnodes 2 (c10d rendezvous)", seconds, difference)

    # --eval-only under torchrun: one node, two processes, inference split between them.
    log = root / "torchrun_eval.log"
    start = time.monotonic()
    (text,) = _finish([_start(
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         DRIVER, "train_net", "--eval-only", "--config-file", str(config), "MODEL.WEIGHTS",
         str(out / "model_final.pth"), "DATASETS.TEST", "('mm_val',)", "OUTPUT_DIR", str(root / "torchrun_eval")],
        _env(root), log)], [log])
    _report("torchrun --nproc-per-node 2 --eval-only", time.monotonic() - start)
    assert "Evaluation results for mm_val in csv format" in text
    assert "World size: 2" in text and "Starting training" not in text


@pytest.mark.slow
def test_srun_environment_ends_like_one_launcher(job, single_launcher):
    root, config = job
    out = root / "srun"
    logs = [root / f"srun{r}.log" for r in (0, 1)]
    port = _free_port()
    start = time.monotonic()
    # What srun --nodes 1 --ntasks 2 sets for its two tasks (MASTER_* as an sbatch script would).
    slurm = dict(SLURM_JOB_ID=4217, SLURM_STEP_ID=0, SLURM_STEP_NUM_TASKS=2, SLURM_NTASKS=2,
                 SLURM_STEP_NUM_NODES=1, SLURM_STEP_TASKS_PER_NODE="2", SLURM_STEP_NODELIST="localhost",
                 SLURM_NODEID=0, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    procs = [_start(_train_net(config, out), _env(root, SLURM_PROCID=r, SLURM_LOCALID=r, **slurm), logs[r])
             for r in (0, 1)]
    texts = _finish(procs, logs)
    seconds = time.monotonic() - start
    finals = _finals(out)
    assert all((f["world_size"], f["start_iter"], f["iter"]) == (2, 0, MAX_ITER) for f in finals.values())
    assert sorted(finals) == ["final_rank0.json", "final_rank1.json"]
    assert _checkpoints(out) == CHECKPOINTS
    assert "World size: 2" in texts[0] and "World size: 2" not in texts[1]
    difference = _max_difference(single_launcher, _weights(out))
    _report("srun environment, 2 tasks", seconds, difference)


@pytest.mark.slow
def test_a_killed_machine_stops_the_other_and_resume_continues_exactly(job, single_launcher):
    root, config = job
    out = root / "killed"  # shared by both machines, as a cluster's file system: --resume needs it
    timeout = 60
    url = f"tcp://127.0.0.1:{_free_port()}"
    logs = [root / f"killed{r}.log" for r in (0, 1)]

    def machine(r, *extra, **env):
        return _start(_train_net(config, out, "--num-machines", "2", "--machine-rank", str(r), "--dist-url", url,
                                 "--dist-timeout", str(timeout), *extra), _env(root, **env), logs[r])

    start = time.monotonic()
    # Machine 1 stops after iteration 3, past the checkpoint of iteration 2 (the kill loses finished
    # work); machine 0 waits in iteration 4's all-reduce.
    m0, m1 = machine(0), machine(1, FPN_TEST_BLOCK_AFTER=3)
    try:
        deadline = time.monotonic() + TIMEOUT
        while "BLOCKED" not in open(logs[1]).read():
            assert m1.poll() is None and time.monotonic() < deadline, open(logs[1]).read()[-4000:]
            time.sleep(0.2)
        os.killpg(m1.pid, signal.SIGKILL)  # the machine is gone: launcher and worker
        killed = time.monotonic()
        rc = m0.wait(timeout=timeout + 60)
        stopped = time.monotonic() - killed
    finally:
        for p in (m0, m1):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    text = open(logs[0]).read()
    assert rc != 0, text[-4000:]
    assert stopped < timeout + 30, stopped
    assert "DistributedJobFailed" in text and "a process of this job probably died" in text, text[-4000:]
    assert "--resume" in text
    first_run = time.monotonic() - start
    assert not (out / "model_final.pth").exists()
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth"

    start = time.monotonic()
    url = f"tcp://127.0.0.1:{_free_port()}"
    texts = _finish([machine(0, "--resume"), machine(1, "--resume")], logs)
    resumed = time.monotonic() - start
    assert "Resuming from {}".format(out / "model_0000002.pth") in texts[0]
    finals = _finals(out)
    assert all((f["world_size"], f["start_iter"], f["iter"]) == (2, 3, MAX_ITER) for f in finals.values())
    difference = _max_difference(single_launcher, _weights(out))
    print(f"\n[multi-machine] killed machine 1 after iteration 3: machine 0 stopped {stopped:.1f} s later "
          f"(first run {first_run:.1f} s in all); message: "
          + next(line for line in text.splitlines() if "a process of this job probably died" in line)[:400])
    _report("two machine launchers, --resume after the kill", resumed, difference)
