"""The config the notebook trains with: the chosen config plus the notebook's parameters.

:func:`write_config` writes an ordinary child config (``_BASE_`` is the chosen one), so a run
started in the notebook can be repeated from a shell with the same file.
"""
import os
from typing import Dict, Optional

import yaml

from ..config import load_config
from ..device import resolve_device
from ..engine.schedule import scale_iterations
from ..precision import choose_precision

__all__ = ["DATASETS", "write_config"]

# What the notebook's DATASET parameter may be.
DATASETS = ("config", "shapes", "coco", "voc", "own")


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
    from-scratch or high-LR run from blowing up, whatever the run's length. (Batch scaling
    scales it instead: there the same images are seen in fewer, larger steps.)
    """
    if iterations <= 0:
        return {}
    keys = scale_iterations(base, base.SOLVER.MAX_ITER / iterations)
    keys["SOLVER.MAX_ITER"] = iterations
    keys["SOLVER.WARMUP_ITERS"] = min(base.SOLVER.WARMUP_ITERS, iterations // 2)
    return keys


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
        precision: one of :data:`fpn_plugin.precision.PRECISIONS`; "auto" is fp16 on a GPU, bf16 on CPUs with native
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
