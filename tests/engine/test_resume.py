"""Resume vs fine-tune, exact resume after SIGKILL, scheduler state, atomic checkpoints."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from _tiny import register_synthetic, tiny_cfg

from fpn_plugin.engine import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "train_driver.py")


def _env(tmp_path, record, block_after=None):
    env = dict(os.environ)
    env.update(FPN_TEST_DATASETS="resume_train", FPN_TEST_DATA_ROOT=str(tmp_path / "data"),
               FPN_TEST_RECORD=str(record), OMP_NUM_THREADS="1")
    env.pop("FPN_TEST_BLOCK_AFTER", None)
    if block_after is not None:
        env["FPN_TEST_BLOCK_AFTER"] = str(block_after)
    return env


def _lrs(record):
    return {r["iter"]: r["lr"] for r in map(json.loads, open(record))}


@pytest.mark.slow
def test_resume_after_sigkill_replays_the_straight_run_exactly(tmp_path):
    n = 3
    cfg = tiny_cfg("", "resume_train", max_iter=2 * n)
    cfg.SOLVER.CHECKPOINT_PERIOD = n
    cfg.SOLVER.STEPS = (4,)
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.dump())

    def command(out, *extra):
        return [sys.executable, DRIVER, "train_net", "--config-file", str(config), *extra, "OUTPUT_DIR", str(out)]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # Both first runs at once: the straight one, and one that blocks after iteration n+1,
    # past its checkpoint at iteration n-1, so that the kill loses finished work.
    a = subprocess.Popen(command(straight), env=_env(tmp_path, tmp_path / "a.jsonl"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b = subprocess.Popen(command(killed), env=_env(tmp_path, tmp_path / "b.jsonl", block_after=n + 1),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in b.stdout:
            if "BLOCKED" in line:
                break
        assert (killed / "model_{:07d}.pth".format(n - 1)).is_file()
        os.kill(b.pid, signal.SIGKILL)
        assert b.wait(timeout=60) == -signal.SIGKILL
        assert a.wait(timeout=300) == 0
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert not (killed / "model_final.pth").exists()
    assert (killed / "last_checkpoint").read_text() == "model_{:07d}.pth".format(n - 1)

    resumed = subprocess.run(command(killed, "--resume"), env=_env(tmp_path, tmp_path / "c.jsonl"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from {}".format(killed / "model_{:07d}.pth".format(n - 1)) in resumed.stdout

    final_a = json.loads((straight / "final_rank0.json").read_text())
    final_c = json.loads((killed / "final_rank0.json").read_text())
    assert (final_a["start_iter"], final_a["iter"]) == (0, 2 * n)
    assert (final_c["start_iter"], final_c["iter"]) == (n, 2 * n)

    lr_a = _lrs(tmp_path / "a.jsonl")
    lr_b = _lrs(tmp_path / "b.jsonl")
    lr_c = _lrs(tmp_path / "c.jsonl")
    assert sorted(lr_a) == list(range(2 * n)) and sorted(lr_c) == list(range(n, 2 * n))
    replay = {**{i: lr_b[i] for i in range(n)}, **lr_c}
    assert replay == pytest.approx(lr_a, rel=1e-12)
    assert lr_a[0] < lr_a[2] and lr_a[5] < lr_a[3]  # warmup, then the step at 4: not constant

    wa = torch.load(straight / "model_final.pth", map_location="cpu", weights_only=False)
    wc = torch.load(killed / "model_final.pth", map_location="cpu", weights_only=False)
    assert wa["trainer"]["iteration"] == wc["trainer"]["iteration"] == 2 * n - 1
    for name, value in wa["model"].items():
        torch.testing.assert_close(wc["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    # The weights moved after the resume point: the comparison is not of untouched weights.
    init = torch.load(killed / "model_{:07d}.pth".format(n - 1), map_location="cpu", weights_only=False)
    moved = [k for k, v in wa["model"].items() if v.is_floating_point() and not torch.equal(v, init["model"][k])]
    assert len(moved) > 10


def _train(cfg, resume=False, trainer_cls=Trainer):
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_fine_tune_from_weights_uses_the_config_lr_not_the_checkpoint(tmp_path, caplog):
    register_synthetic("ft_train", str(tmp_path / "data"))
    first = tiny_cfg(str(tmp_path / "first"), "ft_train", max_iter=2)
    first.SOLVER.BASE_LR = 0.004
    first.SOLVER.WARMUP_ITERS = 0
    first.SOLVER.STEPS = ()
    _train(first)
    saved = torch.load(tmp_path / "first" / "model_final.pth", weights_only=False)
    assert saved["trainer"]["_trainer"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.004)

    second = tiny_cfg(str(tmp_path / "second"), "ft_train", max_iter=2)
    second.SOLVER.BASE_LR = 0.0005
    second.SOLVER.WARMUP_ITERS = 0
    second.SOLVER.STEPS = ()
    second.MODEL.WEIGHTS = str(tmp_path / "first" / "model_final.pth")
    trainer = Trainer(second)
    with caplog.at_level("INFO", logger="fpn_plugin.engine.resume"):
        trainer.resume_or_load(resume=False)
    assert trainer.start_iter == 0
    assert all(g["lr"] == pytest.approx(0.0005) for g in trainer.optimizer.param_groups)
    assert trainer.optimizer.state_dict()["state"] == {}  # no momentum carried over
    name = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(trainer.model.state_dict()[name], saved["model"][name])
    text = caplog.text
    assert "Fine-tuning: loaded the model weights only from" in text and "LR 0.0005" in text

    # --resume in an output directory with a checkpoint restores the checkpoint's state.
    again = tiny_cfg(str(tmp_path / "first"), "ft_train", max_iter=4)
    again.SOLVER.BASE_LR = 0.0005
    trainer = Trainer(again)
    with caplog.at_level("INFO", logger="fpn_plugin.engine.resume"):
        trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    assert "Resuming from {}".format(tmp_path / "first" / "model_final.pth") in caplog.text
    # Resuming continues the run (its base LR 0.004) on this config's longer schedule, whose
    # STEPS (2,) now apply at iteration 2: not the checkpoint's LR of the shorter run.
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.004 * 0.1)
    assert "with LR 0.0004." in caplog.text


class _StepLRTrainer(Trainer):
    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


def test_torch_scheduler_state_survives_a_resume(tmp_path):
    # As detectron2's test_checkpoint_resume (12 iterations there): with 0.6's hook,
    # last_epoch came back as 0.
    assert not isinstance(torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler._LRScheduler)
    register_synthetic("sched_train", str(tmp_path / "data"))
    cfg = tiny_cfg(str(tmp_path / "out"), "sched_train", max_iter=6)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 8
    cfg.SOLVER.IMS_PER_BATCH = 1
    cfg.SOLVER.BASE_LR = 0.001  # StepLR has no warmup
    first = _train(cfg, trainer_cls=_StepLRTrainer)
    assert first.scheduler.last_epoch == 6
    second = _StepLRTrainer(cfg)
    second.resume_or_load(resume=True)
    assert second.scheduler.last_epoch == 6
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * 0.5 ** 3)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from fpn_plugin.engine.atomic_save import AtomicDetectionCheckpointer

    model = torch.nn.Linear(2, 2)
    ckpt = AtomicDetectionCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001")
    good = (tmp_path / "model_0000001.pth").read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model_0000001.pth", "last_checkpoint"):  # as open() makes them, not mkstemp's 0600
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000001")
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000002")
    assert (tmp_path / "model_0000001.pth").read_bytes() == good
    assert not (tmp_path / "model_0000002.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]


def test_a_killed_writes_temporary_files_are_removed_at_the_next_start(tmp_path, caplog):
    # A SIGKILL mid-write leaves <name>.pth.<random>.tmp (up to a whole checkpoint) behind.
    register_synthetic("resume_tmp", str(tmp_path / "data"), num_images=4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_0000004.pth.abc123.tmp").write_bytes(b"half a checkpoint")
    (out / "last_checkpoint.x1y2.tmp").write_text("model_0000004.pth")
    (out / "notes.tmp").write_text("the user's own file")  # not ours: kept
    with caplog.at_level("INFO"):
        Trainer(tiny_cfg(str(out), "resume_tmp"))
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == ["notes.tmp"]
    assert ("Removed 2 temporary files of interrupted checkpoint writes: last_checkpoint.x1y2.tmp, "
            "model_0000004.pth.abc123.tmp") in caplog.text
