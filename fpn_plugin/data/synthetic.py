"""A synthetic shapes dataset that needs no download: the embedded default.

Images of circles, squares and triangles of varied sizes, colours and counts on a noisy
background, with a train and a val split. It is deterministic: the same seed and sizes give
the same bytes (each image has its own random stream, derived from the seed, the split and
its index). It is generated on first use into a cache folder, as PNG images plus a COCO JSON
per split, and registered as ``shapes_train`` and ``shapes_val`` (COCO evaluation).
"""
import json
import logging
import os
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .boxes import apply_box_rule
from .catalog import unregister

__all__ = ["SHAPE_CLASSES", "ShapesSpec", "ensure_shapes", "register_shapes"]

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ("circle", "square", "triangle")
_VERSION = 1  # bump when the drawing changes, so old caches are not reused
_MIN_SIZE, _MAX_SIZE = 16, 80  # shape extent in pixels: small, medium and (almost) large
_MAX_SHAPES = 5


class ShapesSpec(tuple):
    """(seed, num_train, num_val, height, width): what determines the generated data."""

    def __new__(cls, seed=0, num_train=200, num_val=50, height=192, width=256):
        values = (int(seed), int(num_train), int(num_val), int(height), int(width))
        return super().__new__(cls, values)

    @property
    def folder_name(self) -> str:
        seed, ntrain, nval, h, w = self
        return f"v{_VERSION}_seed{seed}_train{ntrain}_val{nval}_{h}x{w}"

    @classmethod
    def from_config(cls, cfg) -> "ShapesSpec":
        s = cfg.DATASETS.SHAPES
        return cls(s.SEED, s.NUM_TRAIN, s.NUM_VAL, s.IMAGE_SIZE[0], s.IMAGE_SIZE[1])


def _draw_shape(rng: np.random.Generator, kind: str, size: int, center: Tuple[int, int],
                shape_hw: Tuple[int, int]) -> np.ndarray:
    """A boolean mask of one shape."""
    mask = np.zeros(shape_hw, dtype=np.uint8)
    cx, cy = center
    half = size // 2
    if kind == "circle":
        cv2.circle(mask, (cx, cy), half, 1, thickness=-1, lineType=cv2.LINE_8)
    elif kind == "square":
        cv2.rectangle(mask, (cx - half, cy - half), (cx + half, cy + half), 1, thickness=-1)
    else:
        # An isosceles triangle pointing up or down, of varied aspect.
        h = int(round(size * rng.uniform(0.75, 1.0)))
        sign = 1 if rng.random() < 0.5 else -1
        pts = np.array([[cx, cy - sign * h // 2], [cx - half, cy + sign * h // 2],
                        [cx + half, cy + sign * h // 2]], dtype=np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _make_image(rng: np.random.Generator, height: int, width: int):
    """One image (H, W, 3) uint8 BGR and its annotations [(class index, XYWH box, area)]."""
    base = rng.integers(20, 90, size=3)
    image = np.clip(base + rng.normal(0, 12, size=(height, width, 3)), 0, 255).astype(np.uint8)
    anns: List[Tuple[int, List[float], float]] = []
    boxes: List[Tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(1, _MAX_SHAPES + 1))):
        for _attempt in range(30):
            cls = int(rng.integers(len(SHAPE_CLASSES)))
            size = int(rng.integers(_MIN_SIZE, min(_MAX_SIZE, height - 4, width - 4) + 1))
            cx = int(rng.integers(size // 2 + 1, width - size // 2 - 1))
            cy = int(rng.integers(size // 2 + 1, height - size // 2 - 1))
            mask = _draw_shape(rng, SHAPE_CLASSES[cls], size, (cx, cy), (height, width))
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            # No overlap (with a 2-pixel gap): every box is fully visible.
            if all(box[0] >= b[2] + 2 or b[0] >= box[2] + 2 or box[1] >= b[3] + 2
                   or b[1] >= box[3] + 2 for b in boxes):
                break
        else:
            continue  # no room left for another shape
        colour = rng.integers(0, 256, size=3)
        while np.abs(colour - base).sum() < 200:  # keep shapes visible against the background
            colour = rng.integers(0, 256, size=3)
        image[mask] = colour.astype(np.uint8)
        boxes.append(box)
        x0, y0, x1, y1 = box
        xywh = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
        anns.append((cls, xywh, float(mask.sum())))
    return image, anns


def generate_shapes(out_dir: str, spec: ShapesSpec) -> Dict[str, str]:
    """Generate both splits into ``out_dir`` (images in ``<split>/``, ``<split>.json``).

    Returns:
        split -> COCO JSON path.
    """
    seed, num_train, num_val, height, width = spec
    paths = {}
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            image, anns = _make_image(rng, height, width)
            file_name = f"{split}/{i:06d}.png"
            cv2.imwrite(os.path.join(out_dir, file_name), image)
            images.append({"id": i + 1, "file_name": file_name, "height": height, "width": width})
            for cls, bbox, area in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": cls + 1, "bbox": bbox, "area": area,
                                    "iscrowd": 0})
        coco = {
            "info": {"description": f"fpn_plugin synthetic shapes, {split}", "version": _VERSION,
                     "seed": seed},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(SHAPE_CLASSES)],
        }
        paths[split] = os.path.join(out_dir, f"{split}.json")
        with open(paths[split], "w") as f:
            json.dump(coco, f)
    return paths


def ensure_shapes(cache_dir: str, spec: ShapesSpec = ShapesSpec()) -> str:
    """The folder of the generated dataset, generating it on first use.

    Generation writes into a temporary folder and renames it, so an interrupted run leaves no
    half-written dataset and concurrent first uses do not clash.
    """
    folder = os.path.join(cache_dir, spec.folder_name)
    if os.path.isfile(os.path.join(folder, "val.json")):
        return folder
    os.makedirs(cache_dir, exist_ok=True)
    logger.info("Generating the synthetic shapes dataset into %s ...", folder)
    tmp = tempfile.mkdtemp(prefix=".tmp_shapes_", dir=cache_dir)
    try:
        generate_shapes(tmp, spec)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.isfile(os.path.join(folder, "val.json")):
                raise  # not a concurrent generation that finished first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def register_shapes(cache_dir: str, spec: ShapesSpec = ShapesSpec(),
                    names: Sequence[str] = ("shapes_train", "shapes_val")) -> None:
    """Register the train and val splits; the data is generated when first loaded.

    Registering again (another spec or cache folder) replaces the previous registration.
    """
    # Absolute, so a later change of the working directory does not move the cache.
    cache_dir = os.path.abspath(cache_dir)
    folder = os.path.join(cache_dir, spec.folder_name)
    for split, name in zip(("train", "val"), names):
        unregister(name)
        json_file = os.path.join(folder, f"{split}.json")

        def load(json_file=json_file, name=name):
            ensure_shapes(cache_dir, spec)
            return apply_box_rule(load_coco_json(json_file, folder, name), name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPE_CLASSES),
            thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(SHAPE_CLASSES))},
            json_file=json_file,
            image_root=folder,
            evaluator_type="coco",
            shapes_spec=tuple(spec),
        )
