"""The dataset check finds each planted problem, with its file and index."""
import json
import os

import cv2
import numpy as np
import pytest

import fpn_plugin  # noqa: F401
from fpn_plugin.data.check import check_coco, check_voc, draw_ground_truth, main


def _image(path, w=64, h=48):
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


@pytest.fixture()
def coco_with_problems(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        _image(images / f"ok{i}.png")
    (images / "broken.jpg").write_bytes(b"this is not a jpeg")
    _image(images / "small.png", w=32, h=32)  # the JSON says 64x48
    data = {
        "images": [
            {"id": 0, "file_name": "ok0.png", "width": 64, "height": 48},
            {"id": 1, "file_name": "ok1.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "missing.png", "width": 64, "height": 48},
            {"id": 3, "file_name": "broken.jpg", "width": 64, "height": 48},
            {"id": 1, "file_name": "ok2.png", "width": 64, "height": 48},  # duplicate image id
            {"id": 5, "file_name": "small.png", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 0, "bbox": [5, 5, 20, 20], "iscrowd": 0},  # id 0
            {"id": 2, "image_id": 0, "category_id": 1, "bbox": [50, 30, 30, 10], "iscrowd": 0},  # outside
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 12], "iscrowd": 0},  # zero area
            {"id": 4, "image_id": 1, "category_id": 7, "bbox": [10, 10, 5, 5], "iscrowd": 0},  # unknown cat
            {"id": 4, "image_id": 1, "category_id": 0, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # dup ann id
            {"id": 6, "image_id": 99, "category_id": 0, "bbox": [1, 1, 5, 5], "iscrowd": 0},  # unknown image
        ],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    return str(path), str(images)


def test_coco_planted_problems(coco_with_problems):
    json_file, images = coco_with_problems
    report = check_coco(json_file, images)
    found = {(p.kind, p.where) for p in report.problems}
    assert found == {
        ("duplicate id", "images[4]"),
        ("missing image", "image id 2"),
        ("unreadable image", "image id 3"),
        ("image size mismatch", "image id 5"),
        ("box outside image", "annotations[1] (id 2)"),
        ("zero-area box", "annotations[2] (id 3)"),
        ("unknown category", "annotations[3] (id 4)"),
        ("duplicate id", "annotations[4] (id 4)"),
        ("unknown image", "annotations[5] (id 6)"),
        ("annotation id 0", "annotations[0] (id 0)"),
    }
    assert all(p.file == json_file for p in report.problems)
    assert "missing.png" in next(p.message for p in report.problems if p.kind == "missing image")
    assert (report.num_images, report.num_boxes) == (5, 4)
    assert report.class_histogram == {"cat": 2, "dog": 2}
    assert report.id_mapping == ["category id 0 ('cat') -> 0", "category id 1 ('dog') -> 1"]
    text = report.format()
    assert "problems: 10" in text and "unknown category: 1" in text


def test_voc_planted_problems(tmp_path):
    folder = tmp_path / "voc"
    folder.mkdir()

    def xml(name, objects, w=64, h=48, filename=None):
        objs = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in objects)
        (folder / f"{name}.xml").write_text(
            f"<annotation><filename>{filename or name + '.jpg'}</filename><size><width>{w}</width>"
            f"<height>{h}</height></size>{objs}</annotation>")

    xml("a", [("cat", (1, 1, 64, 48), 0), ("dog", (10, 10, 70, 20), 1), ("cat", (30, 30, 30, 40), 0)])
    _image(folder / "a.jpg")
    xml("b", [("horse", (5, 5, 20, 20), 0)])
    _image(folder / "b.jpg")
    xml("c", [("cat", (5, 5, 20, 20), 0)])  # its image is missing
    (folder / "d.xml").write_text("<annotation><object>")  # malformed
    report = check_voc(str(folder), str(folder), None, ["cat", "dog"])
    found = {(p.kind, os.path.basename(p.file), p.where) for p in report.problems}
    assert found == {
        ("box outside image", "a.xml", "object 1 ('dog')"),
        ("zero-area box", "a.xml", "object 2 ('cat')"),
        ("unknown category", "b.xml", "object 0 ('horse')"),
        ("missing image", "c.xml", "image"),
        ("malformed file", "d.xml", "-"),
    }
    assert report.difficult == 1 and report.num_boxes == 4
    # Duplicate ids in an image-set list.
    report = check_voc(str(folder), str(folder), ["a", "b", "a"], None, list_file="train.txt")
    assert [(p.kind, p.file, p.where) for p in report.problems if p.kind == "duplicate id"] == [
        ("duplicate id", "train.txt", "image id 'a'")]


def test_cli_draws_ground_truth_and_fails_on_problems(coco_with_problems, tmp_path, capsys):
    json_file, images = coco_with_problems
    out = tmp_path / "drawn"
    assert main(["--coco", json_file, images, "--output", str(out), "--draw", "2"]) == 1
    text = capsys.readouterr().out
    assert "images: 5   boxes: 4" in text and "[unknown image]" in text
    assert "ground truth drawn on 2 image(s)" in text
    drawn = cv2.imread(str(out / "ok0_gt.png"))
    assert drawn is not None and (drawn != 90).any()  # boxes were drawn on the grey image


def test_a_long_check_shows_its_progress_on_stderr_only(coco_with_problems, tmp_path, capsys,
                                                        monkeypatch):
    from fpn_plugin.data.check import rules

    json_file, images = coco_with_problems
    args = ["--coco", json_file, images, "--draw", "0"]
    assert main(args) == 1
    quick = capsys.readouterr()
    assert quick.err == ""  # a check that ends within the delay shows no bar
    monkeypatch.setattr(rules, "PROGRESS_DELAY_S", 0)  # as if it took long
    assert main(args) == 1
    slow = capsys.readouterr()
    # tqdm's bars with their totals: 5 images (one of the 6 repeats an id), 6 annotations.
    assert "checking images:   0%|          | 0/5" in slow.err
    assert "checking annotations:   0%|          | 0/6" in slow.err
    assert slow.out == quick.out  # the report on stdout is the same
    report = check_voc(*_voc_folder(tmp_path), None, ["cat"])
    assert report.num_images == 1
    assert "checking annotation files:   0%|          | 0/1" in capsys.readouterr().err


def _voc_folder(tmp_path):
    folder = tmp_path / "one_voc"
    folder.mkdir()
    _image(folder / "a.jpg")
    (folder / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height></size>"
        "<object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax>"
        "</bndbox></object></annotation>")
    return str(folder), str(folder)


def test_clean_dataset_passes(tmp_path, capsys):
    from fpn_plugin.data import ShapesSpec, ensure_shapes

    folder = ensure_shapes(str(tmp_path), ShapesSpec(1, 3, 2, 64, 64))
    report = check_coco(os.path.join(folder, "val.json"), folder)
    assert report.problems == [] and report.num_images == 2
    assert len(draw_ground_truth(report, str(tmp_path / "gt"))) == 2


def test_registered_dataset_dicts_are_checked(tmp_path):
    import uuid

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    from fpn_plugin.data.check import check_dataset

    _image(tmp_path / "a.png")
    name = f"test_check_dicts_{uuid.uuid4().hex[:6]}"
    dicts = [
        {"file_name": str(tmp_path / "a.png"), "image_id": 1, "height": 48, "width": 64, "annotations": [
            {"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
            {"bbox": [60, 40, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
            {"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 3}]},
        {"file_name": str(tmp_path / "gone.png"), "image_id": 1, "height": 48, "width": 64, "annotations": []},
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    try:
        report = check_dataset(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert sorted((p.kind, p.where) for p in report.problems) == [
        ("box outside image", "dataset dict [0] (image_id 1) annotation 1"),
        ("duplicate id", "dataset dict [1] (image_id 1)"),
        ("missing image", "dataset dict [1] (image_id 1)"),
        ("unknown category", "dataset dict [0] (image_id 1) annotation 2"),
    ]
    assert report.class_histogram == {"a": 2}


def test_xyxy_boxes_in_a_coco_file_are_recognised(tmp_path):
    _image(tmp_path / "a.png", w=100, h=80)
    boxes_xyxy = [[10, 40, 60, 75], [40, 30, 90, 70], [50, 5, 95, 40]]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "iscrowd": 0}
                            for k, b in enumerate(boxes_xyxy)],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    report = check_coco(str(tmp_path / "a.json"), str(tmp_path))
    kinds = report.kinds()
    assert kinds["box outside image"] == 3 and kinds["box format"] == 1
    hint = next(p for p in report.problems if p.kind == "box format")
    assert "3 of the 3 boxes outside their image fit inside it when read as [x0, y0, x1, y1]" in hint.message


def test_exif_nan_boxes_crowd_and_exit_codes(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 100 wide x 60 high, shown (and trained on) 60 x 100
    Image.new("RGB", (100, 60), (90, 90, 90)).save(images / "phone.jpg", exif=exif)
    data = {
        "images": [{"id": 1, "file_name": "phone.jpg", "width": 60, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, float("nan"), 20], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 50, 50], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "face"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    report = check_coco(str(path), str(images))
    # The size as training reads it (EXIF applied): no size mismatch is reported.
    assert [p.kind for p in report.problems] == ["non-finite box"]
    assert report.crowd == 1 and report.num_boxes == 2
    # The NaN box is reported, not drawn (it crashed the drawing before); exit 1 for problems.
    assert main(["--coco", str(path), str(images), "--output", str(tmp_path / "gt"), "--draw", "1"]) == 1
    out = capsys.readouterr().out
    assert "crowd boxes (not trained on): 1" in out and "ground truth drawn on 1 image(s)" in out
    # Drawn upright, as training reads it (EXIF applied): the boxes are in those coordinates.
    assert cv2.imread(str(tmp_path / "gt" / "phone_gt.png")).shape[:2] == (100, 60)
    # A check that cannot run at all is exit 2, with the reason.
    assert main(["--coco", str(tmp_path / "nothing.json"), str(images)]) == 1  # reported as malformed
    (tmp_path / "bad.yaml").write_text("MODEL: {NOT_A_KEY: 1}\n")
    assert main(["--config-file", str(tmp_path / "bad.yaml")]) == 2
    assert "could not run: KeyError" in capsys.readouterr().err


def test_a_malformed_xml_outside_the_split_does_not_block_it(tmp_path, caplog):
    import uuid

    from detectron2.data import DatasetCatalog

    from fpn_plugin.data import register_custom_dataset

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(2):
        _image(folder / f"p{i}.png")
        (folder / f"p{i}.xml").write_text(
            f"<annotation><filename>p{i}.png</filename><size><width>64</width><height>48</height></size>"
            "<object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax>"
            "</bndbox></object></annotation>")
    (folder / "broken.xml").write_text("<annotation><object>")  # not in the split
    (tmp_path / "train.txt").write_text("p0\np1\n")
    name = "split_" + uuid.uuid4().hex[:6]
    with caplog.at_level("WARNING", logger="fpn_plugin.data.voc"):
        register_custom_dataset(name, {"FORMAT": "voc_folder", "DIR": str(folder), "SPLIT": str(tmp_path / "train.txt")})
    assert [d["image_id"] for d in DatasetCatalog.get(name)] == ["p0", "p1"]
    assert "broken.xml" in caplog.text and "cannot be parsed" in caplog.text


def test_records_whose_values_cannot_be_parsed_are_reported_not_a_crash(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (100, 80)).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": "wide", "height": 80}, "not an image"],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": ["a", "b", "c", "d"], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": "1234", "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 9], "iscrowd": 0},
            {"id": [4], "image_id": 1, "category_id": 1, "bbox": [5, 5, 9, 9], "iscrowd": 0},
            17,
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [5, 5, 9, 9], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "face"}, {"id": "two", "name": "hand"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    report = check_coco(str(path), str(tmp_path))
    kinds = report.kinds()
    assert kinds["malformed box"] == 3  # strings, a string, three values
    assert kinds["malformed record"] == 4  # an image, an annotation id, a bare number, a category
    assert report.num_boxes == 1  # annotation 6 is fine
    text = report.format()
    assert "annotations[4]" in text and "categories[1]" in text and "images[1]" in text
    # Problems found: exit 1 (not 2, "could not run").
    assert main(["--coco", str(path), str(tmp_path), "--output", str(tmp_path / "gt")]) == 1
    # JSON that is not an object at all is a reported malformed file too.
    (tmp_path / "list.json").write_text("[1, 2]")
    assert check_coco(str(tmp_path / "list.json"), str(tmp_path)).kinds()["malformed file"] == 1


def test_training_refuses_records_that_are_not_objects_naming_them(tmp_path):
    import pytest
    from detectron2.data import DatasetCatalog

    from _coco_records import ann, register_coco

    name = register_coco(tmp_path, [ann(1, [5, 5, 9, 9]), 17])
    with pytest.raises(ValueError, match=r"annotations\[1\] is not an object \(17\)") as info:
        DatasetCatalog.get(name)
    assert "ann.json" in str(info.value)
