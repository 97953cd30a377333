"""Plot data of a resumed run: earlier iterations from metrics.json, later from the storage."""
import json

import fpn_plugin  # noqa: F401
from detectron2.utils.events import EventStorage

from fpn_plugin.engine.plots import collect_series, plot_curves


def test_resumed_run_plots_the_whole_history(tmp_path):
    metrics = tmp_path / "metrics.json"
    with open(metrics, "w") as f:
        for it in range(0, 8):  # the killed run got to iteration 7; the resume starts at 5
            f.write(json.dumps({"iteration": it, "total_loss": 10.0 - it, "lr": 0.01, "time": 1.0}) + "\n")
        f.write('{"iteration": 8, "total_lo')  # cut short by the kill
    with EventStorage(5) as storage:
        for it in (5, 6):
            storage.iter = it
            storage.put_scalar("total_loss", 100.0 + it)
            storage.put_scalar("lr", 0.001)
            storage.put_scalar("rpn/num_pos_anchors", 250.0)
            storage.put_scalar("fast_rcnn/cls_accuracy", 0.9)
        storage.put_scalars(**{"bbox/AP50": 42.0, "val/total_loss": 3.0}, smoothing_hint=False)
        series = collect_series(storage, str(metrics), start_iter=5)
    assert series["total_loss"] == [(0, 10.0), (1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 105.0), (6, 106.0)]
    assert series["bbox/AP50"] == [(6, 42.0)] and "time" not in series
    paths = plot_curves(series, str(tmp_path / "plots"))
    names = ["losses.png", "lr.png", "metrics.png", "training_stats.png"]
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == names
    assert all((tmp_path / "plots" / name).stat().st_size > 1000 for name in names)


def test_metrics_and_training_statistics_are_plotted_apart():
    from fpn_plugin.engine.plots import _group

    # AP (0-100) must not share an axis with anchor counts (~250) or accuracies (0-1).
    assert _group("bbox/AP") == _group("bbox/AP50-person") == "metrics"
    assert _group("rpn/num_pos_anchors") == _group("fast_rcnn/cls_accuracy") == "training_stats"
    assert _group("roi_head/num_fg_samples") == "training_stats"
    assert _group("loss_rpn_cls") == _group("val/total_loss") == "losses"
    assert _group("lr") == "lr" and _group("val/other") == ""


def test_without_matplotlib_training_keeps_going_without_plots_and_says_which_extra(tmp_path, monkeypatch, caplog):
    import logging

    from fpn_plugin.engine import Trainer, hooks, trainer as trainer_module

    from _tiny import register_synthetic, tiny_cfg

    cfg = tiny_cfg(str(tmp_path / "out"), register_synthetic("plots_tiny", str(tmp_path)))
    cfg.TEST.PLOTS.ENABLED = True
    kinds = lambda: {type(h) for h in Trainer(cfg).build_hooks()}  # noqa: E731
    assert hooks.PlotCurves in kinds()
    monkeypatch.setattr(trainer_module, "available", lambda module: module != "matplotlib")
    with caplog.at_level(logging.WARNING, logger="fpn_plugin.engine.trainer"):
        assert hooks.PlotCurves not in kinds()
    assert "matplotlib is not installed" in caplog.text
    assert "pip install 'fpn-plugin[plots]'" in caplog.text and "TEST.PLOTS.ENABLED False" in caplog.text
