"""The synthetic shapes dataset: deterministic, varied, cached, registered."""
import filecmp
import json
import os

import cv2
import numpy as np

import fpn_plugin  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from fpn_plugin.data import SHAPE_CLASSES, ShapesSpec, ensure_shapes, setup_datasets

SPEC = ShapesSpec(seed=7, num_train=12, num_val=4, height=96, width=128)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = ensure_shapes(str(tmp_path / "a"), SPEC)
    b = ensure_shapes(str(tmp_path / "b"), SPEC)
    files = _files(a)
    assert files == _files(b) and len(files) == 12 + 4 + 2
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    c = ensure_shapes(str(tmp_path / "c"), ShapesSpec(8, 12, 4, 96, 128))
    assert open(os.path.join(a, "train.json")).read() != open(os.path.join(c, "train.json")).read()


def test_content_is_varied_and_boxes_are_tight(tmp_path):
    folder = ensure_shapes(str(tmp_path), SPEC)
    data = json.load(open(os.path.join(folder, "train.json")))
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
    anns = data["annotations"]
    per_image = np.bincount([a["image_id"] for a in anns], minlength=13)[1:]
    assert len(data["images"]) == 12 and per_image.min() >= 1 and per_image.max() <= 5
    assert len(set(per_image.tolist())) > 1  # the number of shapes varies
    assert {a["category_id"] for a in anns} == {1, 2, 3}
    widths = [a["bbox"][2] for a in anns]
    assert min(widths) < 32 and max(widths) > 48  # small and larger objects
    colours = set()
    for img in data["images"]:
        image = cv2.imread(os.path.join(folder, img["file_name"]))
        assert image.shape == (96, 128, 3)
        for a in (a for a in anns if a["image_id"] == img["id"]):
            x, y, w, h = (int(v) for v in a["bbox"])
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 96 and w > 0 and h > 0
            # The shape's colour is in the box's centre row, and the box is tight: the
            # shape touches each side of it.
            crop = image[y:y + h, x:x + w].astype(int)
            colour = crop[h // 2, w // 2]
            inside = np.abs(crop - colour).sum(axis=2) == 0
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            colours.add(tuple(colour))
    assert len(colours) > 10


def test_cache_is_reused(tmp_path):
    folder = ensure_shapes(str(tmp_path), SPEC)
    stamp = os.stat(os.path.join(folder, "train", "000000.png")).st_mtime_ns
    assert ensure_shapes(str(tmp_path), SPEC) == folder
    assert os.stat(os.path.join(folder, "train", "000000.png")).st_mtime_ns == stamp
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_registered_from_config_and_generated_on_first_use(tmp_path):
    cfg = get_cfg()
    fpn_plugin.add_fpn_plugin_config(cfg)
    cfg.merge_from_list(["DATASETS.SHAPES.CACHE_DIR", str(tmp_path / "cache"),
                         "DATASETS.SHAPES.NUM_TRAIN", "6", "DATASETS.SHAPES.NUM_VAL", "3",
                         "DATASETS.SHAPES.IMAGE_SIZE", "(64, 80)",
                         "DATASETS.TRAIN", "('shapes_train',)", "DATASETS.TEST", "('shapes_val',)"])
    try:
        assert setup_datasets(cfg) == 3 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
        assert not (tmp_path / "cache").exists()  # nothing generated until the data is used
        val = DatasetCatalog.get("shapes_val")
        assert len(val) == 3 and val[0]["height"] == 64 and val[0]["width"] == 80
        assert os.path.isfile(val[0]["file_name"])
        assert MetadataCatalog.get("shapes_val").evaluator_type == "coco"
    finally:
        from fpn_plugin.data.builtin import register_default_shapes

        register_default_shapes()  # back to the default registration for other tests
