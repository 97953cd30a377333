"""Loading weights never runs code: hostile .pkl/.pth files are refused on every route.

Each hostile file holds a ``__reduce__`` payload that would create a marker file; every test
checks the refusal message (file and global named, one line) and that the marker never appears.
Genuine files of every format the project reads still load, with equal tensors.
"""
import argparse
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from _weight_files import (
    detectron2_builtin_model,
    plugin_cfg,
    save_detectron2_checkpoint,
    save_msra_pkl,
    torchvision_resnet,
)

from fpn_plugin.checkpoint import PluginCheckpointer, UnsafeWeightsError
from fpn_plugin.checkpoint.resnet_formats import detectron2_resnet_to_plugin
from fpn_plugin.checkpoint.safe_load import WeightsUnpickler

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux and macOS
UNSAFE_KEY = "MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE"


class _Touch:
    """Unpickled, runs ``os.system("touch <marker>")``: what a hostile weights file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _TouchByExec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _hostile_pkl(path: Path, marker: Path, protocol: int = pickle.HIGHEST_PROTOCOL, payload=_Touch):
    """A model-zoo shaped .pkl (weights, __author__) with the payload among the weights."""
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1.weight": np.zeros((2, 3, 1, 1), np.float32),
                               "conv1.bias": payload(marker)},
                     "__author__": "Detectron2 Model Zoo"}, f, protocol=protocol)
    return path


def _hostile_pth(path: Path, marker: Path):
    torch.save({"model": {"conv1.weight": torch.zeros(2, 3, 1, 1)}, "iteration": _Touch(marker)}, path)
    return path


def _small_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))


def _assert_refused(error, path: Path, asked: str, marker: Path):
    text = str(error)
    assert f"{path} asks for {asked}" in text
    assert "refused; nothing was executed" in text
    assert UNSAFE_KEY in text  # how to load a trusted file
    assert "\n" not in text  # one line, not torch's long generic message
    assert not marker.exists()


# ---- the readers ------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("payload,asked", [(_Touch, SYSTEM), (_TouchByExec, "builtins.exec")])
def test_hostile_pkl_is_refused_by_plugin_checkpointer(tmp_path, protocol, payload, asked):
    marker = tmp_path / "marker"
    path = _hostile_pkl(tmp_path / "evil.pkl", marker, protocol, payload)
    with pytest.raises(UnsafeWeightsError) as e:
        PluginCheckpointer(_small_model()).load(str(path))
    _assert_refused(e.value, path, asked, marker)
    assert e.value.refused == asked


def test_plain_pickle_would_have_run_the_payload(tmp_path):
    # The hostile files are real: plain pickle (what detectron2 uses) runs their command.
    marker = tmp_path / "marker"
    with open(_hostile_pkl(tmp_path / "evil.pkl", marker), "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_hostile_pth_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "marker"
    path = _hostile_pth(tmp_path / "evil.pth", marker)
    with pytest.raises(UnsafeWeightsError) as e:
        PluginCheckpointer(_small_model()).load(str(path))
    _assert_refused(e.value, path, SYSTEM, marker)
    assert "weights_only=True" in str(e.value)
    # A raw pickle named .pth goes through torch's reader too, which refuses what it cannot read.
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"model": _Touch(marker)}, protocol=2))
    with pytest.raises(UnsafeWeightsError) as e:
        PluginCheckpointer(_small_model()).load(str(raw))
    _assert_refused(e.value, raw, SYSTEM, marker)
    raw.write_bytes(pickle.dumps({"model": _Touch(marker)}, protocol=4))
    with pytest.raises(UnsafeWeightsError) as e:
        PluginCheckpointer(_small_model()).load(str(raw))
    # (torch's reader does not know protocol 4's FRAME opcode: its reason is given instead)
    _assert_refused(e.value, raw, "", marker)


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_detectron2_checkpointer_is_safe_once_fpn_plugin_is_imported(tmp_path, suffix):
    marker = tmp_path / "marker"
    path = tmp_path / f"evil{suffix}"
    (_hostile_pkl if suffix == ".pkl" else _hostile_pth)(path, marker)
    with pytest.raises(UnsafeWeightsError) as e:
        DetectionCheckpointer(_small_model()).load(str(path))
    _assert_refused(e.value, path, SYSTEM, marker)


def test_numpy_reconstruction_with_another_class_is_refused(tmp_path):
    # _reconstruct is allowed, but only ever with the classes the list allows.
    marker = tmp_path / "marker"
    data = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n"
            b"cargparse\nNamespace\nK\x00\x85C\x01b\x86R.")
    path = tmp_path / "sub.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeWeightsError) as e:
        with open(path, "rb") as f:
            WeightsUnpickler(f, name=str(path)).load()
    _assert_refused(e.value, path, "argparse.Namespace", marker)


def test_not_a_dict_is_a_clear_error(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="list.pkl holds a list, not a dict of weights"):
        PluginCheckpointer(_small_model()).load(str(path))


# ---- genuine files of every format still load ------------------------------------------------

def _assert_equal_tensors(model, expected, prefix=""):
    state = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            continue  # FrozenBN has no counter
        torch.testing.assert_close(state[prefix + key], torch.as_tensor(value), rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_msra_pkl_of_any_pickle_protocol_loads(tmp_path, protocol):
    # Protocol 2 is what Python 2 (Caffe2, the MSRA files) wrote: arrays as _codecs.encode bytes.
    tv = torchvision_resnet(50, seed=1).state_dict()
    path = tmp_path / "R-50.pkl"
    save_msra_pkl(path, tv)
    with open(path, "rb") as f:
        blobs = pickle.load(f)
    with open(path, "wb") as f:
        pickle.dump(blobs, f, protocol=protocol)
    model = build_model(plugin_cfg("fpn_r50.yaml"))  # training mode: a backbone-only file is fine
    PluginCheckpointer(model).load(str(path))
    conv = model.state_dict()["backbone.bottom_up.layer1.0.conv1.weight"]
    torch.testing.assert_close(conv, torch.as_tensor(blobs["res2_0_branch2a_w"]), rtol=0, atol=0)


def test_torchvision_pth_and_own_checkpoint_load(tmp_path):
    tv = torchvision_resnet(18, seed=2).state_dict()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv, path)
    model = build_model(plugin_cfg("fpn_r18.yaml"))  # training mode: a backbone-only file is fine
    PluginCheckpointer(model).load(str(path))
    _assert_equal_tensors(model, {k: v for k, v in tv.items() if not k.startswith("fc.")},
                          "backbone.bottom_up.")
    # The model's own checkpoint, as the trainer writes it (with the class names).
    own = tmp_path / "own"
    own.mkdir()
    PluginCheckpointer(model, str(own)).save("model_final", iteration=3)
    fresh = build_model(plugin_cfg("fpn_r18.yaml")).eval()
    PluginCheckpointer(fresh).load(str(own / "model_final.pth"))
    _assert_equal_tensors(fresh, model.state_dict())


def test_detectron2_zoo_pkl_and_pth_load_with_both_checkpointers(tmp_path):
    reference = detectron2_builtin_model()
    pth, pkl = save_detectron2_checkpoint(reference, tmp_path)
    for path in (pkl, pth):
        d2 = detectron2_builtin_model(seed=9)
        DetectionCheckpointer(d2).load(str(path))
        _assert_equal_tensors(d2, reference.state_dict())
        plugin = build_model(plugin_cfg("fpn_r50.yaml")).eval()
        PluginCheckpointer(plugin).load(str(path))
        _assert_equal_tensors(plugin, detectron2_resnet_to_plugin(reference.state_dict(), plugin))


@pytest.mark.skipif(not hasattr(DetectionCheckpointer, "_parsed_url_during_load") and
                    "_parsed_url_during_load" not in DetectionCheckpointer.__init__.__code__.co_names,
                    reason="detectron2 0.6 has no ?matching_heuristics=True query (git main has)")
def test_matching_heuristics_query_of_detectron2_main_still_works(tmp_path):
    model = _small_model()
    path = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, path)
    fresh = _small_model()
    extra = DetectionCheckpointer(fresh).load(f"{path}?matching_heuristics=True")
    _assert_equal_tensors(fresh, model.state_dict())
    assert extra["matching_heuristics"] is True
    with pytest.raises(ValueError, match="Unsupported query"):
        DetectionCheckpointer(fresh).load(f"{path}?other=1")


# ---- the trainer's own checkpoints, and --resume ---------------------------------------------

def _tiny_trainer(tmp_path, out, scheduler=None):
    sys.path.insert(0, str(ROOT / "tests" / "engine"))
    from _tiny import register_synthetic, tiny_cfg

    from fpn_plugin.engine import Trainer

    register_synthetic("safe_load_train", str(tmp_path / "data"))
    cfg = tiny_cfg(str(out), "safe_load_train", max_iter=2)
    cfg.MODEL.DEVICE = "cpu"

    class _Trainer(Trainer):
        @classmethod
        def build_lr_scheduler(cls, cfg, optimizer):
            if scheduler is None:
                return super().build_lr_scheduler(cfg, optimizer)
            return scheduler(optimizer)

    return _Trainer, cfg


def test_trainer_checkpoints_load_weights_only_and_resume(tmp_path, caplog):
    from fpn_plugin.engine import hooks

    out = tmp_path / "out"
    # A torch scheduler (its state holds a collections.Counter) and the hooks with state.
    trainer_cls, cfg = _tiny_trainer(
        tmp_path, out, lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 5]))
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=False)
    best = hooks.BestCheckpointer(1, trainer.checkpointer, "bbox/AP50", "max")
    stop = hooks.EarlyStopping(1, "bbox/AP50", patience=2)
    trainer.register_hooks([best, stop])
    trainer.train()
    best.best_metric, best.best_iter = 42.5, 1
    stop.best, stop.best_iter, stop.bad_evals = 42.5, 1, 1
    trainer.checkpointer.save("model_final", iteration=trainer.iter)

    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    state = saved["trainer"]
    assert state["_trainer"]["optimizer"]["state"]  # momentum buffers
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert "seed" in state["data"]
    assert saved["metadata"]["class_names"] == ["red", "green"]
    hook_states = list(state["hooks"].values())
    assert {"best_metric": 42.5, "best_iter": 1} in hook_states
    assert any("milestones" in h for h in hook_states)

    resumed = trainer_cls(cfg)
    resumed.register_hooks([hooks.BestCheckpointer(1, resumed.checkpointer, "bbox/AP50", "max"),
                            hooks.EarlyStopping(1, "bbox/AP50", patience=2)])
    with caplog.at_level(logging.INFO, logger="fpn_plugin.engine.resume"):
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == trainer.iter + 1
    assert f"Resuming from {out / 'model_final.pth'}" in caplog.text
    assert resumed.scheduler.last_epoch == trainer.scheduler.last_epoch
    assert resumed._hooks[-2].best_metric == 42.5 and resumed._hooks[-1].bad_evals == 1

    # A hostile file where --resume looks: refused, nothing run, nothing loaded.
    marker = tmp_path / "marker"
    _hostile_pth(out / "model_0000009.pth", marker)
    (out / "last_checkpoint").write_text("model_0000009.pth")
    again = trainer_cls(cfg)
    with pytest.raises(UnsafeWeightsError) as e:
        again.resume_or_load(resume=True)
    _assert_refused(e.value, out / "model_0000009.pth", SYSTEM, marker)
    assert again.start_iter == 0


# ---- the opt-in for a trusted legacy file ----------------------------------------------------

def _legacy_files(tmp_path):
    """Trusted legacy files: weights next to an argparse.Namespace (training arguments)."""
    weights = {"0.weight": np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1),
               "0.bias": np.array([0.5, -1.0], np.float32)}
    args = argparse.Namespace(lr=0.02, note="trained in 2019")
    pkl = tmp_path / "legacy.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": weights, "__author__": "someone", "args": args}, f)
    pth = tmp_path / "legacy.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in weights.items()}, "args": args}, pth)
    return weights, pkl, pth


def test_legacy_file_is_refused_by_default_and_loads_with_the_opt_in(tmp_path, caplog):
    weights, pkl, pth = _legacy_files(tmp_path)
    cfg = plugin_cfg("fpn_r18.yaml")
    assert cfg.MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE is False
    for path in (pkl, pth):
        with pytest.raises(UnsafeWeightsError, match="asks for argparse.Namespace"):
            PluginCheckpointer.from_config(cfg, _small_model()).load(str(path))

    cfg.MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE = True
    for path in (pkl, pth):
        model = _small_model()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fpn_plugin.checkpoint.safe_load"):
            extra = PluginCheckpointer.from_config(cfg, model).load(str(path))
        _assert_equal_tensors(model, weights)
        assert extra["args"].lr == 0.02
        assert (f"{UNSAFE_KEY} is True: loading {path}, which asks for argparse.Namespace, "
                "with plain pickle") in caplog.text

    # detectron2's own checkpointer has the opt-in as an attribute.
    checkpointer = DetectionCheckpointer(_small_model())
    checkpointer.allow_unsafe_pickle = True
    checkpointer.load(str(pkl))


def test_opt_in_still_reads_genuine_files_safely(tmp_path, caplog):
    path = tmp_path / "w.pth"
    torch.save({"model": _small_model().state_dict()}, path)
    cfg = plugin_cfg("fpn_r18.yaml", **{UNSAFE_KEY: True})
    with caplog.at_level(logging.WARNING, logger="fpn_plugin.checkpoint.safe_load"):
        PluginCheckpointer.from_config(cfg, _small_model()).load(str(path))
    assert UNSAFE_KEY not in caplog.text  # plain pickle only for files the safe readers refuse


# ---- the command-line tools ------------------------------------------------------------------

def _run(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def _image(tmp_path):
    import cv2

    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.full((64, 80, 3), 90, np.uint8))
    return path


@pytest.mark.slow
def test_predict_py_refuses_hostile_weights(tmp_path):
    marker = tmp_path / "marker"
    image = _image(tmp_path)
    for path in (_hostile_pkl(tmp_path / "evil.pkl", marker), _hostile_pth(tmp_path / "evil.pth", marker)):
        run = _run([str(ROOT / "predict.py"), "--config-file", str(ROOT / "configs" / "fpn_r18.yaml"),
                    "--weights", str(path), "--input", str(image), "--device", "cpu",
                    "--output", str(tmp_path / "pred")], tmp_path)
        assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
        assert f"predict.py: {path} asks for {SYSTEM} while it is read" in run.stderr
        assert "refused; nothing was executed" in run.stderr
        assert "Traceback" not in run.stderr
        assert not marker.exists()


@pytest.mark.slow
def test_predict_py_opt_in_flag_loads_a_trusted_legacy_file(tmp_path):
    # A detector checkpoint of fpn_r18's architecture, saved with a legacy extra.
    model = build_model(plugin_cfg("fpn_r18.yaml")).eval()
    path = tmp_path / "legacy.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.02)}, path)
    image = _image(tmp_path)
    common = [str(ROOT / "predict.py"), "--config-file", str(ROOT / "configs" / "fpn_r18.yaml"),
              "--weights", str(path), "--input", str(image), "--device", "cpu", "--no-vis",
              "--output", str(tmp_path / "pred")]
    refused = _run(common, tmp_path)
    assert refused.returncode == 2 and "asks for argparse.Namespace" in refused.stderr
    run = _run(common + ["--allow-unsafe-pickle"], tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"{UNSAFE_KEY} is True: loading {path}" in run.stdout + run.stderr
    assert (tmp_path / "pred" / "predictions.json").is_file()


@pytest.mark.slow
def test_train_net_eval_only_refuses_hostile_weights(tmp_path):
    marker = tmp_path / "marker"
    for path in (_hostile_pkl(tmp_path / "evil.pkl", marker), _hostile_pth(tmp_path / "evil.pth", marker)):
        run = _run([str(ROOT / "train_net.py"), "--eval-only",
                    "--config-file", str(ROOT / "configs" / "fpn_r18.yaml"),
                    "MODEL.WEIGHTS", str(path), "MODEL.DEVICE", "cpu",
                    "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
                    "OUTPUT_DIR", str(tmp_path / "eval")], tmp_path)
        assert run.returncode != 0
        assert f"UnsafeWeightsError: {path} asks for {SYSTEM} while it is read" in run.stderr
        assert "refused; nothing was executed" in run.stderr
        assert not marker.exists()

    # --allow-unsafe-pickle: a trusted legacy file (weights with an argparse.Namespace) loads.
    legacy = tmp_path / "legacy.pth"
    model = build_model(plugin_cfg("fpn_r18.yaml")).eval()
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.02)}, legacy)
    run = _run([str(ROOT / "train_net.py"), "--eval-only", "--allow-unsafe-pickle",
                "--config-file", str(ROOT / "configs" / "fpn_r18.yaml"),
                "MODEL.WEIGHTS", str(legacy), "MODEL.DEVICE", "cpu",
                "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
                "OUTPUT_DIR", str(tmp_path / "eval")], tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"{UNSAFE_KEY} is True: loading {legacy}, which asks for argparse.Namespace" in run.stdout + run.stderr
