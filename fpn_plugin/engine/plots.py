"""PNG plots of a training run: losses (train and validation), learning rate, metrics."""
import json
import os
from collections import defaultdict

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


def _is_loss(name: str) -> bool:
    return "loss" in name.split("/")[-1]


def plot_curves(series: dict, output_dir: str) -> list:
    """Write losses.png, lr.png and (when there are metrics) metrics.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and safe in worker processes
    import matplotlib.pyplot as plt

    os.makedirs(output_dir, exist_ok=True)
    groups = {
        "losses": {n: s for n, s in series.items() if _is_loss(n)},
        "lr": {n: s for n, s in series.items() if n == "lr"},
        "metrics": {
            n: s for n, s in series.items() if "/" in n and not _is_loss(n) and not n.startswith("val/")
        },
    }
    paths = []
    for title, curves in groups.items():
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, points in sorted(curves.items()):
            its, values = zip(*points)
            style = "--" if name.startswith("val/") else "-"
            marker = "o" if len(points) < 50 else None
            ax.plot(its, values, style, marker=marker, markersize=3, linewidth=1, label=name)
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        path = os.path.join(output_dir, f"{title}.png")
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, path)  # a viewer never sees half a PNG
        paths.append(path)
    return paths
