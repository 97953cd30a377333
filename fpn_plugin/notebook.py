"""What the Colab notebook (``colab/fpn_plugin.ipynb``) calls besides the command-line tools.

The notebook holds no model, training or evaluation logic: it writes one config with
:func:`write_config`, runs ``train_net.py``, ``predict.py`` and the package's CLIs with
:func:`run`, and shows what they wrote with :func:`show_images` and :func:`print_ap_table`.
The config it writes is an ordinary child config (``_BASE_`` is the chosen one), so a run
started in the notebook can be repeated from a shell with the same file.
"""
import glob
import json
import os
import shlex
import subprocess
import sys
from collections import deque
from typing import Dict, Iterable, List, Optional, Sequence

import yaml

from .config import load_config  # noqa: F401  (the notebook's cells call it from here)
from .device import resolve_device
from .precision import PRECISIONS, choose_precision

__all__ = [
    "DATASETS", "PRECISIONS", "run", "CommandFailed", "write_config", "load_config",
    "test_images", "test_coco_json", "print_ap_table", "show_images",
]

# What the notebook's DATASET parameter may be.
DATASETS = ("config", "shapes", "coco", "voc", "own")

# Summary metrics of each evaluator, in the order printed; per-class keys contain "-".
_SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP50_07", "AP50_area")


class CommandFailed(RuntimeError):
    """A command run by :func:`run` exited with an error; the message holds its last lines."""


def run(args: Sequence, cwd: Optional[str] = None, tail_lines: int = 40) -> None:
    """Run ``python <args>`` and stream its output into the notebook.

    Raises:
        CommandFailed: on a non-zero exit, with the command and its last output lines, so the
            notebook cell fails where the problem is instead of going on with missing files.
    """
    cmd = [sys.executable, *map(str, args)]
    print("$ python " + " ".join(shlex.quote(a) for a in cmd[1:]), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail = deque(maxlen=tail_lines)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
        code = proc.wait()
    except BaseException:  # an interrupted cell must not leave a training process holding the GPU
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise CommandFailed(
            f"`python {' '.join(map(str, args))}` exited with code {code}. Its last lines:\n"
            + "".join(tail)
        )


def _dataset_keys(dataset: str, data_dir: str, own_train: Optional[dict], own_val: Optional[dict]) -> dict:
    if dataset not in DATASETS:
        raise ValueError(f"DATASET is {dataset!r}; choose one of {list(DATASETS)}.")
    if dataset == "config":
        return {}
    if dataset == "shapes":
        return {"DATASETS.TRAIN": ["shapes_train"], "DATASETS.TEST": ["shapes_val"]}
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"DATASET {dataset!r} needs DATA_DIR, the folder holding the data; {data_dir!r} is "
            "not a folder. See datasets/README.md for the layout and the fetch scripts."
        )
    keys = {"DATASETS.ROOT": os.path.abspath(data_dir)}
    if dataset == "coco":
        _require(data_dir, "coco/annotations/instances_val2017.json", "python datasets/fetch_coco.py")
        return {**keys, "DATASETS.TRAIN": ["coco_2017_train"], "DATASETS.TEST": ["coco_2017_val"]}
    if dataset == "voc":
        _require(data_dir, "VOC2007/ImageSets/Main/test.txt", "python datasets/fetch_voc.py")
        return {**keys, "DATASETS.TRAIN": ["voc_2007_trainval"], "DATASETS.TEST": ["voc_2007_test"]}
    if not own_train or not own_train.get("FORMAT"):
        raise ValueError(
            "DATASET 'own' needs OWN_TRAIN, e.g. {'FORMAT': 'coco', 'JSON': 'train.json', "
            "'IMAGES': 'train'} or {'FORMAT': 'voc_folder', 'DIR': 'train'}; paths relative to "
            "DATA_DIR (see fpn_plugin/data/custom.py)."
        )
    keys["DATASETS.CUSTOM"] = {"own_train": dict(own_train)}
    keys["DATASETS.TRAIN"] = ["own_train"]
    keys["DATASETS.TEST"] = []
    if own_val:
        keys["DATASETS.CUSTOM"]["own_val"] = dict(own_val)
        keys["DATASETS.TEST"] = ["own_val"]
    return keys


def _require(data_dir: str, relative: str, fetch: str) -> None:
    if not os.path.exists(os.path.join(data_dir, relative)):
        raise FileNotFoundError(
            f"{os.path.join(data_dir, relative)} does not exist. Put the dataset under DATA_DIR "
            f"as datasets/README.md shows (`{fetch} --help`), or check DATA_DIR."
        )


def _schedule_keys(base, iterations: int) -> dict:
    """A shorter (or longer) run: MAX_ITER, with STEPS and periods at the same fractions.

    The warmup keeps its length (at most half the run): it is what keeps the first steps of a
    from-scratch or high-LR run from blowing up, whatever the run's length.
    """
    if iterations <= 0:
        return {}
    s = base.SOLVER
    f = iterations / s.MAX_ITER
    steps = sorted({max(1, round(step * f)) for step in s.STEPS if round(step * f) < iterations})

    def period(value):
        return max(1, min(iterations, round(value * f))) if value > 0 else value

    return {
        "SOLVER.MAX_ITER": iterations,
        "SOLVER.STEPS": steps,
        "SOLVER.WARMUP_ITERS": min(s.WARMUP_ITERS, iterations // 2),
        "SOLVER.CHECKPOINT_PERIOD": period(s.CHECKPOINT_PERIOD),
        "TEST.EVAL_PERIOD": period(base.TEST.EVAL_PERIOD),
    }


def _precision_keys(precision: str, device: str) -> dict:
    name = choose_precision(precision, device, setting="PRECISION").name
    if name == "fp32":
        return {"SOLVER.AMP.ENABLED": False}
    return {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": name}


def _nested(flat: Dict[str, object]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return out


def write_config(
    output_dir: str,
    config: str,
    dataset: str = "config",
    data_dir: str = "",
    own_train: Optional[dict] = None,
    own_val: Optional[dict] = None,
    iterations: int = 0,
    ims_per_device: int = 0,
    accumulation_steps: int = 1,
    image_size: int = 0,
    precision: str = "auto",
    device: str = "auto",
    extra: Optional[Dict[str, object]] = None,
) -> str:
    """Write ``<output_dir>/notebook_config.yaml``: ``config`` plus the notebook's parameters.

    Args:
        output_dir: the run's OUTPUT_DIR; the config is written into it.
        config: the config to start from, e.g. ``configs/shapes_r18_fpn.yaml``.
        dataset: one of :data:`DATASETS`: the config's own datasets, the synthetic shapes, COCO
            2017 or VOC 2007 under ``data_dir``, or the user's data (``own_train``/``own_val``,
            entries of ``DATASETS.CUSTOM`` with paths relative to ``data_dir``).
        iterations: MAX_ITER for a shorter or longer run, STEPS and periods kept at the same
            fractions of it, the warmup as long as before (at most half the run); 0 keeps the
            config's schedule.
        ims_per_device, accumulation_steps: images per forward pass and passes per optimizer
            step (0: the config's batch). The trainer rescales LR and schedule from the config's
            batch to the one used and prints the table.
        image_size: shortest side for training and testing (0: the config's); the longest side
            is capped at 1333/800 of it, as in detectron2's configs.
        precision: one of :data:`PRECISIONS`; "auto" is fp16 on a GPU, bf16 on CPUs with native
            bf16, fp32 elsewhere.
        device: "auto", "cpu", "cuda"...
        extra: more overrides, ``{"DOTTED.KEY": value}``; they win over everything above.

    Returns:
        The path of the written config.
    """
    base = load_config(config)
    device = resolve_device(device)
    flat: Dict[str, object] = {"OUTPUT_DIR": os.path.abspath(output_dir), "MODEL.DEVICE": device}
    flat.update(_dataset_keys(dataset, data_dir, own_train, own_val))
    flat.update(_schedule_keys(base, iterations))
    if ims_per_device > 0:
        flat["SOLVER.IMS_PER_DEVICE"] = ims_per_device
    flat["SOLVER.ACCUMULATION_STEPS"] = accumulation_steps
    if image_size > 0:
        flat.update({
            "INPUT.MIN_SIZE_TRAIN": [image_size], "INPUT.MIN_SIZE_TEST": image_size,
            "INPUT.MAX_SIZE_TRAIN": round(image_size * 1333 / 800),
            "INPUT.MAX_SIZE_TEST": round(image_size * 1333 / 800),
        })
    flat.update(_precision_keys(precision, device))
    flat.update(extra or {})
    body = {"_BASE_": os.path.abspath(config), **_nested(flat)}
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "notebook_config.yaml")
    with open(path, "w") as f:
        f.write(f"# Written by the notebook (fpn_plugin.notebook.write_config) from {config}.\n")
        yaml.safe_dump(body, f, sort_keys=False)
    load_config(path)  # fail here, naming the key, rather than in the training process
    return path


def _registered(config_file: str):
    from .data import setup_datasets

    cfg = load_config(config_file)
    setup_datasets(cfg, config_file)
    if not cfg.DATASETS.TEST:
        raise ValueError(f"{config_file} has no DATASETS.TEST: set OWN_VAL (or DATASET) to evaluate.")
    return cfg


def test_images(config_file: str, count: int = 4) -> List[str]:
    """The first ``count`` image files of the config's first test dataset."""
    from detectron2.data import DatasetCatalog

    cfg = _registered(config_file)
    return [r["file_name"] for r in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:count]]


def test_coco_json(config_file: str) -> Optional[str]:
    """The COCO JSON of the config's first test dataset, when it has one (for FiftyOne)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    cfg = _registered(config_file)
    name = cfg.DATASETS.TEST[0]
    DatasetCatalog.get(name)  # generated data (the shapes) writes its JSON on first use
    return MetadataCatalog.get(name).get("json_file")


def print_ap_table(config_file: str) -> List[list]:
    """Print the box AP of the last evaluation of each test dataset, beside the published one.

    Reads ``<OUTPUT_DIR>/inference/<dataset>/results.json`` (written by the evaluators). With
    ``TEST.REFERENCE`` set, the table has the reference and the difference; otherwise ours only.

    Returns:
        The rows printed (for the last dataset).
    """
    from .evaluation.compare import HEADER, comparison_rows
    from .evaluation.references import get_reference
    from .evaluation.tables import RESULTS_FILE, markdown_table

    cfg = load_config(config_file)
    rows: List[list] = []
    for name in cfg.DATASETS.TEST:
        path = os.path.join(cfg.OUTPUT_DIR, "inference", name, RESULTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: evaluate first (train_net.py --eval-only).")
        with open(path) as f:
            ours = {k: (float("nan") if v is None else v) for k, v in json.load(f)["bbox"].items()}
        if cfg.TEST.REFERENCE:
            ref = get_reference(cfg.TEST.REFERENCE)
            rows = comparison_rows(ours, ref)
            print(f"Box AP on {name} vs {ref.title} ({ref.source}; {ref.metric})")
            if ref.dataset != name:
                print(f"Note: the reference was measured on {ref.dataset}, not {name}: "
                      "not a like-for-like comparison.")
            print(markdown_table(HEADER, rows))
        else:
            rows = [[k, ours[k]] for k in _SUMMARY if k in ours]
            print(f"Box AP on {name} (no published result for this config: TEST.REFERENCE is empty)")
            print(markdown_table(["metric", "ours"], rows))
        print()
    return rows


def show_images(paths: Iterable[str], width: int = 480, limit: int = 12) -> List[str]:
    """Display image files inline (sorted; at most ``limit``); return the paths shown."""
    from IPython.display import Image, display

    if isinstance(paths, str):
        paths = sorted(glob.glob(paths))
    shown = sorted(paths)[:limit]
    if not shown:
        print("(no images to show)")
    for path in shown:
        print(os.path.basename(path))
        display(Image(filename=path, width=width))
    return shown
