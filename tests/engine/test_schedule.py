"""Batch-size scaling of schedules, and epochs: the numbers."""
import math

import pytest

from _tiny import register_synthetic, tiny_cfg

from detectron2.config import get_cfg

from fpn_plugin.config import add_fpn_plugin_config
from fpn_plugin.engine import Trainer
from fpn_plugin.engine.schedule import apply_epochs, format_table, scale_iterations, scale_schedule


def _reference_cfg(**solver):
    """A schedule written for 8 GPUs x 2 images, like detectron2's 1x configs."""
    cfg = get_cfg()
    add_fpn_plugin_config(cfg)
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.MAX_ITER = 90000
    cfg.SOLVER.STEPS = (60000, 80000)
    cfg.SOLVER.WARMUP_ITERS = 1000
    cfg.SOLVER.CHECKPOINT_PERIOD = 5000
    cfg.TEST.EVAL_PERIOD = 5000
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def test_one_gpu_two_images_accumulating_two_is_a_quarter_of_the_reference():
    cfg, rows = scale_schedule(_reference_cfg(IMS_PER_DEVICE=2, ACCUMULATION_STEPS=2), num_processes=1)
    s = cfg.SOLVER
    assert s.BASE_LR == pytest.approx(0.005)
    assert (s.MAX_ITER, tuple(s.STEPS), s.WARMUP_ITERS) == (360000, (240000, 320000), 4000)
    assert (s.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD) == (20000, 20000)
    assert s.IMS_PER_BATCH == 2  # what detectron2's loader takes per forward pass
    assert s.REFERENCE_BATCH_SIZE == 4
    table = format_table(rows)
    assert table.splitlines()[2].split() == ["total", "batch", "(images/step)", "16", "4"]
    assert "1 x 2 x 2" in table
    assert "SOLVER.BASE_LR" in table and "0.005" in table
    # Scaling the scaled config again changes nothing.
    again, _ = scale_schedule(cfg, num_processes=1)
    assert again.dump() == cfg.dump()


def test_reference_batch_reached_with_more_processes_changes_nothing():
    cfg, _ = scale_schedule(_reference_cfg(IMS_PER_DEVICE=4, ACCUMULATION_STEPS=2), num_processes=2)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (0.02, 90000, (60000, 80000))
    assert cfg.SOLVER.IMS_PER_BATCH == 8


def test_larger_batch_and_sqrt_rule():
    cfg, _ = scale_schedule(
        _reference_cfg(IMS_PER_DEVICE=8, LR_SCALING="sqrt", REFERENCE_BATCH_SIZE=16), num_processes=8
    )
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.02 * math.sqrt(4))
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS), cfg.SOLVER.WARMUP_ITERS) == (22500, (15000, 20000), 250)


def test_default_keys_keep_detectron2_behaviour():
    cfg, _ = scale_schedule(_reference_cfg(), num_processes=8)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_DEVICE) == (0.02, 90000, 2)


@pytest.mark.parametrize(
    "solver, processes, message",
    [
        ({"REFERENCE_WORLD_SIZE": 8}, 1, "SOLVER.REFERENCE_WORLD_SIZE is 8"),
        ({"ACCUMULATION_STEPS": 0}, 1, "SOLVER.ACCUMULATION_STEPS is 0"),
        ({}, 3, "SOLVER.IMS_PER_BATCH (16) is not divisible by the 3 processes"),
        ({"LR_SCALING": "cubic"}, 1, "SOLVER.LR_SCALING is 'cubic'"),
    ],
)
def test_bad_batch_keys_say_which_key_to_fix(solver, processes, message):
    with pytest.raises(ValueError) as info:
        scale_schedule(_reference_cfg(**solver), num_processes=processes)
    assert message in str(info.value)


def test_epochs_become_iterations():
    # COCO train2017 (118287 images) at 16 images per step: 7393 iterations per epoch.
    cfg = _reference_cfg(EPOCHS=12.0, STEPS_EPOCHS=(8, 11))
    cfg, _ = scale_schedule(cfg, num_processes=8)
    cfg, per_epoch = apply_epochs(cfg, 118287)
    assert per_epoch == math.ceil(118287 / 16) == 7393
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (12 * 7393, (8 * 7393, 11 * 7393))
    # Without STEPS_EPOCHS the decay points keep their fraction of the training.
    cfg, _ = apply_epochs(_reference_cfg(EPOCHS=12.0), 118287)
    assert tuple(cfg.SOLVER.STEPS) == (round(60000 * 88716 / 90000), round(80000 * 88716 / 90000))


def test_epochs_follow_the_scaled_batch():
    cfg = _reference_cfg(EPOCHS=1.0, IMS_PER_DEVICE=2)
    cfg, _ = scale_schedule(cfg, num_processes=1)
    _, per_epoch = apply_epochs(cfg, 1000)
    assert per_epoch == 500


def test_bad_epoch_keys():
    with pytest.raises(ValueError, match=r"outside \(0, SOLVER.EPOCHS=12.0\): \[13\]"):
        apply_epochs(_reference_cfg(EPOCHS=12.0, STEPS_EPOCHS=(8, 13)), 1000)
    with pytest.raises(ValueError, match="SOLVER.EPOCHS is 0"):
        apply_epochs(_reference_cfg(STEPS_EPOCHS=(8,)), 1000)


def test_trainer_prints_the_table_and_the_epoch(tmp_path, caplog):
    register_synthetic("schedule_train", str(tmp_path / "data"), num_images=8)
    cfg = tiny_cfg(str(tmp_path / "out"), "schedule_train")
    cfg.merge_from_list([
        "SOLVER.REFERENCE_BATCH_SIZE", 4, "SOLVER.BASE_LR", 0.004, "SOLVER.IMS_PER_DEVICE", 1,
        "SOLVER.ACCUMULATION_STEPS", 2, "SOLVER.EPOCHS", 2.0, "SOLVER.STEPS_EPOCHS", (1.5,),
    ])
    with caplog.at_level("INFO", logger="fpn_plugin.engine.trainer"):
        trainer = Trainer(cfg)
    assert "1 epoch = 4 iterations (8 training images, 2 per iteration); MAX_ITER 8" in caplog.text
    assert "scale factor" in caplog.text and "1 x 1 x 2" in caplog.text
    assert trainer.max_iter == 8 and tuple(trainer.cfg.SOLVER.STEPS) == (6,)
    assert trainer.cfg.SOLVER.BASE_LR == pytest.approx(0.002)
    assert trainer._trainer.accumulation_steps == 2


def _table_values(text: str) -> dict:
    """{key: used value} from the schedule table in a log."""
    table = text.split("Schedule for the batch in use:\n", 1)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        if line.startswith(("INFO", "WARNING")):  # the next log record
            break
        parts = [p.strip() for p in line.split("  ") if p.strip()]
        if line.startswith(("SOLVER.", "TEST.")):
            rows[parts[0]] = parts[-1]
    return rows


@pytest.mark.parametrize("epochs", [0.0, 2.0])
@pytest.mark.parametrize("reference_batch", [0, 4])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_table_shows_what_will_run(tmp_path, caplog, epochs, reference_batch, accumulation):
    register_synthetic("schedule_combos", str(tmp_path / "data"), num_images=8)
    cfg = tiny_cfg(str(tmp_path / "out"), "schedule_combos", max_iter=20)
    cfg.merge_from_list([
        "SOLVER.STEPS", (15,), "SOLVER.EPOCHS", epochs, "SOLVER.REFERENCE_BATCH_SIZE", reference_batch,
        "SOLVER.IMS_PER_DEVICE", 1, "SOLVER.ACCUMULATION_STEPS", accumulation,
    ])
    with caplog.at_level("INFO", logger="fpn_plugin.engine.trainer"):
        trainer = Trainer(cfg)
    used = _table_values(caplog.text)
    assert used["SOLVER.MAX_ITER"] == str(trainer.max_iter)
    assert used["SOLVER.STEPS"] == str(tuple(trainer.cfg.SOLVER.STEPS))
    assert float(used["SOLVER.BASE_LR"]) == pytest.approx(trainer.cfg.SOLVER.BASE_LR)
    if epochs:
        batch = accumulation  # 1 process x 1 image x accumulation
        assert trainer.max_iter == math.ceil(8 / batch) * 2
        assert "SOLVER.EPOCHS" in used


def test_scale_iterations_is_the_one_rounding_rule():
    cfg = _reference_cfg()
    cfg.SOLVER.STEPS = (60000, 60001, 89999)
    cfg.TEST.VAL_LOSS.PERIOD = 0
    keys = scale_iterations(cfg, 4.0)
    assert keys == {
        "SOLVER.MAX_ITER": 22500,
        # 60000 and 60001 both round to 15000; 89999 to 22500, the last iteration: fvcore's
        # multi-step schedule refuses both, so they go.
        "SOLVER.STEPS": (15000,),
        "SOLVER.WARMUP_ITERS": 250,
        "SOLVER.CHECKPOINT_PERIOD": 1250,
        "TEST.EVAL_PERIOD": 1250,
        "TEST.VAL_LOSS.PERIOD": 0,  # off stays off
    }
