"""PNG plots of a training run: losses (train and validation), learning rate, evaluation
metrics, and the training statistics detectron2 logs (anchor and sample counts, accuracies)."""
import json
import os
from collections import defaultdict

from ..optional import require

__all__ = ["collect_series", "plot_curves"]

# Scalars detectron2 writes that are timings, not curves worth plotting.
_SKIP = {"time", "data_time", "eta_seconds", "iteration"}


def collect_series(storage, metrics_json: str, start_iter: int) -> dict:
    """Return {scalar name: sorted [(iteration, value)]} for the whole run.

    The event storage holds this process's iterations; a resumed run also reads the
    iterations before ``start_iter`` from ``metrics.json`` (one JSON object per line, as
    detectron2's ``JSONWriter`` writes it). The last value written for an iteration wins.
    """
    points = defaultdict(dict)
    if start_iter > 0 and os.path.isfile(metrics_json):
        with open(metrics_json) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a killed process
                    continue
                it = record.get("iteration")
                if it is None or it >= start_iter:
                    continue
                for name, value in record.items():
                    if name not in _SKIP and isinstance(value, (int, float)):
                        points[name][it] = float(value)
    for name, history in storage.histories().items():
        if name in _SKIP:
            continue
        for value, it in history.values():
            points[name][int(it)] = float(value)
    return {name: sorted(p.items()) for name, p in points.items() if p}


# Statistics detectron2's heads log while training: counts (~hundreds) and fractions (0-1) that
# would flatten the 0-100 AP curves on a shared axis; each gets its own panel instead.
_TRAINING_STATS = ("rpn/", "roi_head/", "fast_rcnn/", "mask_rcnn/")


def _is_loss(name: str) -> bool:
    return "loss" in name.split("/")[-1]


def _group(name: str) -> str:
    if _is_loss(name):
        return "losses"
    if name == "lr":
        return "lr"
    if name.startswith(_TRAINING_STATS):
        return "training_stats"
    if "/" in name and not name.startswith("val/"):
        return "metrics"  # evaluation results: bbox/AP, bbox/AP50-<class>, ...
    return ""


def plot_curves(series: dict, output_dir: str) -> list:
    """Write losses.png, lr.png and, when there are any, metrics.png (evaluation results on one
    axis) and training_stats.png (a panel per statistic); return their paths."""
    matplotlib = require("matplotlib", "The training plots (PlotCurves)")
    matplotlib.use("Agg")  # no display needed, and safe in worker processes
    import matplotlib.pyplot as plt

    os.makedirs(output_dir, exist_ok=True)
    groups = defaultdict(dict)
    for name, points in series.items():
        if _group(name):
            groups[_group(name)][name] = points
    paths = []
    for title in ("losses", "lr", "metrics", "training_stats"):
        curves = groups.get(title)
        if not curves:
            continue
        names = sorted(curves)
        # One axis for curves of one scale; one panel per statistic for the training stats.
        panels = names if title == "training_stats" else [None]
        cols = min(3, len(panels))
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(8 if cols == 1 else 4 * cols, 5 if rows == 1 else 3 * rows),
                                 squeeze=False)
        for ax, panel in zip(axes.flat, panels):
            for name in names if panel is None else [panel]:
                its, values = zip(*curves[name])
                style = "--" if name.startswith("val/") else "-"
                marker = "o" if len(its) < 50 else None
                ax.plot(its, values, style, marker=marker, markersize=3, linewidth=1, label=name)
            ax.set_xlabel("iteration")
            ax.set_title(title if panel is None else panel, fontsize=9 if panel else None)
            ax.grid(alpha=0.3)
            if panel is None:
                ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.tight_layout()
        path = os.path.join(output_dir, f"{title}.png")
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, path)  # a viewer never sees half a PNG
        paths.append(path)
    return paths
