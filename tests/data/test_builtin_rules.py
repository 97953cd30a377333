"""detectron2's builtin COCO and VOC splits (and the shapes) load through the checks and the
box rule every dataset gets, both under DATASETS.ROOT and as registered at import."""
import json
import logging
import os
import subprocess
import sys

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image

from fpn_plugin.data.builtin import register_builtin_under
from fpn_plugin.data.paths import datasets_root


def _coco_root(root, annotations, images=None):
    folder = root / "coco" / "val2017"
    folder.mkdir(parents=True)
    Image.new("RGB", (100, 80)).save(folder / "a.jpg")
    images = images or [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]
    (root / "coco" / "annotations").mkdir()
    (root / "coco" / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]}))


def _voc_root(root, box):
    voc = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    Image.new("RGB", (64, 48)).save(voc / "JPEGImages" / "000001.jpg")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    objects = "".join(
        f"<object><name>dog</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}"
        f"</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b in box)
    (voc / "Annotations" / "000001.xml").write_text(
        f"<annotation><filename>000001.jpg</filename><size><width>64</width><height>48</height>"
        f"<depth>3</depth></size>{objects}</annotation>")


def _ann(i, bbox):
    return {"id": i, "image_id": 1, "category_id": 1, "bbox": bbox, "area": 1.0, "iscrowd": 0}


@pytest.fixture()
def moved_root(tmp_path):
    yield tmp_path
    register_builtin_under(datasets_root())  # back to the default root for the other tests


def test_builtin_coco_under_a_root_drops_bad_boxes_and_refuses_bad_ids(moved_root, caplog):
    _coco_root(moved_root, [_ann(1, [5, 5, 20, 20]), _ann(2, [5, 5, 0, 0]), _ann(3, [90, 70, 30, 30])])
    register_builtin_under(str(moved_root))
    with caplog.at_level(logging.INFO, logger="fpn_plugin.data.boxes"):
        (record,) = DatasetCatalog.get("coco_2017_val")
    assert "coco_2017_val: dropped 1 of 3 boxes: 1 zero or negative size (annotation 2)" in caplog.text
    assert "clipped 1 boxes to their image (annotation 3)" in caplog.text
    assert [a["bbox"] for a in record["annotations"]] == [[5.0, 5.0, 25.0, 25.0], [90.0, 70.0, 100.0, 80.0]]
    assert MetadataCatalog.get("coco_2017_val").thing_classes[0] == "person"  # builtin metadata kept


def test_builtin_coco_with_a_duplicate_image_id_is_an_error(moved_root):
    image = {"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}
    _coco_root(moved_root, [_ann(1, [5, 5, 20, 20])], images=[image, dict(image, file_name="b.jpg")])
    register_builtin_under(str(moved_root))
    with pytest.raises(ValueError, match="image ids appear twice") as info:
        DatasetCatalog.get("coco_2017_val")
    assert "instances_val2017.json" in str(info.value)


def test_builtin_voc_drops_a_zero_area_box_instead_of_training_a_one_pixel_box(moved_root, caplog):
    _voc_root(moved_root, [(10, 10, 30, 30), (12, 12, 12, 12)])
    register_builtin_under(str(moved_root))
    with caplog.at_level(logging.INFO, logger="fpn_plugin.data.boxes"):
        (record,) = DatasetCatalog.get("voc_2007_test")
    assert len(record["annotations"]) == 1
    assert "voc_2007_test: dropped 1 of 2 boxes: 1 zero or negative size" in caplog.text


def test_the_splits_registered_at_import_follow_the_rule(tmp_path):
    # A fresh process, as a user's: DETECTRON2_DATASETS gives the root detectron2 registers under.
    _coco_root(tmp_path, [_ann(1, [5, 5, 20, 20]), _ann(2, [5, 5, float("nan"), 4])])
    code = ("import logging; logging.basicConfig(level=logging.INFO); import fpn_plugin; "
            "from detectron2.data import DatasetCatalog; "
            "print(len(DatasetCatalog.get('coco_2017_val')[0]['annotations']))")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1"
    assert "coco_2017_val: dropped 1 of 2 boxes: 1 NaN/inf (annotation 2)" in result.stderr
