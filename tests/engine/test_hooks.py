"""The config-driven hooks: best checkpoint, early stopping, validation loss, divergence, plots."""
import json
import math

import pytest
import torch

from _tiny import register_synthetic, tiny_cfg

from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import EventStorage, get_event_storage

from fpn_plugin.engine import Trainer, TrainingDivergedError
from fpn_plugin.engine.hooks import ValidationLoss
from fpn_plugin.engine.rng import get_rng_state


class ScriptedEvaluator(DatasetEvaluator):
    """Reports the next value of a script as bbox/AP50 at each evaluation."""

    def __init__(self, values, calls):
        self.values, self.calls = values, calls

    def reset(self):
        pass

    def process(self, inputs, outputs):
        pass

    def evaluate(self):
        value = self.values[len(self.calls)]
        self.calls.append(get_event_storage().iter)
        return {"bbox": {"AP50": value}}


def _scripted_trainer(values):
    calls = []

    class T(Trainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return ScriptedEvaluator(values, calls)

    return T, calls


def _cfg(tmp_path, max_iter, **keys):
    register_synthetic("hooks_train", str(tmp_path / "data"), num_images=4)
    register_synthetic("hooks_val", str(tmp_path / "data"), num_images=2, seed=1)
    cfg = tiny_cfg(str(tmp_path / "out"), "hooks_train", max_iter=max_iter)
    cfg.DATASETS.TEST = ("hooks_val",)
    for key, value in keys.items():
        cfg.merge_from_list([key.replace("__", "."), value])
    return cfg


def _metrics(tmp_path):
    return [json.loads(line) for line in open(tmp_path / "out" / "metrics.json")]


@pytest.mark.slow
def test_best_checkpoint_val_loss_and_plots_follow_their_keys(tmp_path):
    T, calls = _scripted_trainer([10.0, 30.0, 20.0])
    cfg = _cfg(
        tmp_path, 6, TEST__EVAL_PERIOD=2, SOLVER__CHECKPOINT_PERIOD=2,
        TEST__BEST_CHECKPOINT__METRIC="bbox/AP50", TEST__VAL_LOSS__DATASETS=("hooks_val",),
        TEST__PLOTS__ENABLED=True,
    )
    trainer = T(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    out = tmp_path / "out"
    assert calls == [1, 3, 6]  # the final evaluation is logged at MAX_ITER

    # Best checkpoint: the evaluation at iteration 3 (30.0) wins; later ones are lower.
    best = torch.load(out / "model_best.pth", weights_only=False)
    periodic = torch.load(out / "model_0000003.pth", weights_only=False)
    assert best["iteration"] == 3
    for name, value in periodic["model"].items():
        assert torch.equal(best["model"][name], value), name

    # Validation loss: at each evaluation period and at the end, next to the training loss.
    records = _metrics(tmp_path)
    val = {r["iteration"]: r for r in records if "val/total_loss" in r}
    assert sorted(val) == [1, 3, 6]
    for r in val.values():
        assert {"val/loss_cls", "val/loss_box_reg", "val/loss_rpn_cls", "val/loss_rpn_loc"} <= set(r)
        parts = sum(r[k] for k in ("val/loss_cls", "val/loss_box_reg", "val/loss_rpn_cls", "val/loss_rpn_loc"))
        assert r["val/total_loss"] == pytest.approx(parts)
    assert any("total_loss" in r and "val/total_loss" in r for r in records)

    # Plots: PNG files of the right kinds.
    import matplotlib.image

    for name in ("losses", "lr", "metrics"):
        image = matplotlib.image.imread(out / "plots" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    # A resume remembers the best value: a worse evaluation does not replace model_best.pth.
    T2, calls2 = _scripted_trainer([5.0])
    cfg.SOLVER.MAX_ITER = 7
    resumed = T2(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 6
    resumed.train()
    assert calls2 == [7]
    assert torch.load(out / "model_best.pth", weights_only=False)["iteration"] == 3


@pytest.mark.slow
def test_early_stopping_stops_at_the_evaluation_that_exhausts_patience(tmp_path, caplog):
    # Evaluations after iterations 0, 1, 2, 3, ...: 30.5 is not better than 30 by more than
    # MIN_DELTA 1 (1st miss), 29 is worse (2nd miss = PATIENCE): stop after iteration 3.
    T, calls = _scripted_trainer([10.0, 30.0, 30.5, 29.0, 99.0, 99.0])
    cfg = _cfg(
        tmp_path, 40, TEST__EVAL_PERIOD=1, TEST__BEST_CHECKPOINT__METRIC="bbox/AP50",
        TEST__EARLY_STOPPING__PATIENCE=2, TEST__EARLY_STOPPING__MIN_DELTA=1.0,
    )
    trainer = T(cfg)
    trainer.resume_or_load(resume=False)
    with caplog.at_level("INFO"):
        trainer.train()
    assert calls == [0, 1, 2, 3]
    assert trainer.iter == 3
    final = torch.load(tmp_path / "out" / "model_final.pth", weights_only=False)
    assert final["iteration"] == 3
    # The best is the plain best, the one model_best.pth holds, not the last real progress.
    assert ("early stopping: bbox/AP50 has not improved by more than 1.0 on 30 (iteration 1) for 2 "
            "evaluations; best 30.5 at iteration 2") in caplog.text
    assert torch.load(tmp_path / "out" / "model_best.pth", weights_only=False)["iteration"] == 2
    assert caplog.text.count("Training stopped at iteration 3") == 1


def test_early_stopping_needs_a_metric(tmp_path):
    cfg = _cfg(tmp_path, 4, TEST__EVAL_PERIOD=2, TEST__EARLY_STOPPING__PATIENCE=2)
    with pytest.raises(ValueError, match="TEST.EARLY_STOPPING.METRIC"):
        Trainer(cfg)


if "NaNAtIterationRCNN" not in META_ARCH_REGISTRY:

    @META_ARCH_REGISTRY.register()
    class NaNAtIterationRCNN(GeneralizedRCNN):
        """Faster R-CNN whose classification loss turns NaN at iteration ``nan_at``."""

        nan_at = 5

        def forward(self, batched_inputs):
            losses = super().forward(batched_inputs)
            if self.training and get_event_storage().iter == self.nan_at:
                losses["loss_cls"] = losses["loss_cls"] * float("nan")
            return losses


def test_planted_nan_stops_with_the_message_and_keeps_the_last_checkpoint(tmp_path, caplog):
    cfg = _cfg(tmp_path, 10, SOLVER__CHECKPOINT_PERIOD=2, MODEL__META_ARCHITECTURE="NaNAtIterationRCNN")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train()
    message = str(info.value)
    out = tmp_path / "out"
    assert "Training diverged at iteration 5: the loss became NaN or infinite." in message
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert f"learning rate: {lr:.6g}" in message
    assert "loss_cls = nan" in message and "loss_rpn_loc = " in message
    assert f"The last good checkpoint is kept: {out / 'model_0000003.pth'}" in message
    for advice in ("SOLVER.BASE_LR", "SOLVER.WARMUP_ITERS", "MODEL.RESNETS.NORM", "SOLVER.REFERENCE_BATCH_SIZE"):
        assert advice in message
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (out / "model_final.pth").exists() and not (out / "model_0000005.pth").exists()
    kept = torch.load(out / "model_0000003.pth", weights_only=False)
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    # The diverged step did not reach the weights.
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_validation_loss_changes_neither_model_nor_random_state(tmp_path):
    cfg = _cfg(tmp_path, 2)
    cfg.MODEL.RESNETS.NORM = "BN"
    trainer = Trainer(cfg)
    loader = Trainer.build_val_loss_loader(trainer.cfg, ["hooks_val"])
    hook = ValidationLoss(1, lambda: loader)
    hook.trainer = trainer
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = get_rng_state()
    with EventStorage(0):  # detectron2's models log to the storage in training mode
        means = hook.compute()
    assert set(means) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "total_loss"}
    assert all(math.isfinite(v) for v in means.values())
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert torch.equal(get_rng_state()["torch"], rng["torch"])
    assert trainer.model.training


def test_an_early_stop_does_not_print_the_last_iteration_twice():
    from types import SimpleNamespace

    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    from fpn_plugin.engine.hooks import PeriodicWriter

    calls = []

    class Printer(CommonMetricPrinter):
        def write(self):
            calls.append(("printer", trainer.iter))

    class Json(JSONWriter):
        def write(self):
            calls.append(("json", trainer.iter))

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        writer = PeriodicWriter([Printer(max_iter=40), Json(f"{d}/metrics.json")], period=20, eval_periods=[2])
        trainer = SimpleNamespace(iter=3, max_iter=40)
        writer.trainer = trainer
        writer.after_step()  # an evaluation iteration (3 + 1 is a multiple of 2): written
        writer.after_train()  # stopped early right after it: the printer does not repeat it
    assert calls == [("printer", 3), ("json", 3), ("json", 3)]


def test_the_divergence_advice_on_clipping_follows_the_config(tmp_path):
    from fpn_plugin.engine.divergence import clipping_advice

    cfg = _cfg(tmp_path, 2)
    assert clipping_advice(cfg) == "gradient clipping (SOLVER.CLIP_GRADIENTS.ENABLED True)"
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED, cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = True, 5.0
    advice = clipping_advice(cfg)
    assert "it is on" in advice and "CLIP_VALUE 5" in advice and "ENABLED True" not in advice


def test_the_explosion_guard_judges_against_the_recent_median():
    from fpn_plugin.engine.train_loop import LossExplosionGuard

    guard = LossExplosionGuard(100.0, window=20, min_history=10)
    assert all(guard.check(v) == "" for v in [1e4] + [2.5] * 9)  # an early spike is history only
    assert guard.check(200.0) == ""  # 80x the median 2.5: not yet
    why = guard.check(2.5e8)
    assert why.startswith("the total loss 2.5e+08 is 1e+08x its median 2.5 over the last 11")
    off = LossExplosionGuard(0.0)
    assert all(off.check(v) == "" for v in [1.0] * 20 + [1e12])
    with pytest.raises(ValueError, match="SOLVER.LOSS_EXPLOSION_FACTOR is 0.5: it must be > 1"):
        LossExplosionGuard(0.5)


if "ExplodingAtIterationRCNN" not in META_ARCH_REGISTRY:

    @META_ARCH_REGISTRY.register()
    class ExplodingAtIterationRCNN(GeneralizedRCNN):
        """Faster R-CNN whose classification loss is 1e7 times larger from iteration 12 on."""

        def forward(self, batched_inputs):
            losses = super().forward(batched_inputs)
            if self.training and get_event_storage().iter >= 12:
                losses["loss_cls"] = losses["loss_cls"] * 1e7
            return losses


@pytest.mark.slow
def test_a_finite_exploded_loss_stops_with_the_divergence_message(tmp_path):
    cfg = _cfg(tmp_path, 20, SOLVER__CHECKPOINT_PERIOD=5, MODEL__META_ARCHITECTURE="ExplodingAtIterationRCNN")
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(0)  # the same weights and data order whatever ran before in this process
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train()
    message = str(info.value)
    assert "Training diverged at iteration 12: the loss exploded while finite (the total loss" in message
    assert "x its median" in message and "SOLVER.LOSS_EXPLOSION_FACTOR 100" in message
    assert "The last good checkpoint is kept" in message and "model_0000009.pth" in message
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_training_writes_tensorboard_events_with_training_and_validation_losses(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    T, _ = _scripted_trainer([1.0, 2.0])
    cfg = _cfg(tmp_path, 4, TEST__EVAL_PERIOD=2, TEST__VAL_LOSS__DATASETS=("hooks_val",))
    trainer = T(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    events = list((tmp_path / "out").glob("events.out.tfevents.*"))
    assert len(events) == 1, "detectron2's TensorboardXWriter writes one event file in OUTPUT_DIR"
    accumulator = EventAccumulator(str(events[0])).Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"total_loss", "loss_cls", "lr", "val/total_loss", "val/loss_cls", "bbox/AP50"} <= scalars
    # The same steps and values as metrics.json (one validation per evaluation).
    val = {r["iteration"]: r["val/total_loss"] for r in _metrics(tmp_path) if "val/total_loss" in r}
    assert [e.step for e in accumulator.Scalars("val/total_loss")] == sorted(val) and len(val) == 2
    for e in accumulator.Scalars("val/total_loss"):
        assert e.value == pytest.approx(val[e.step], rel=1e-6)
