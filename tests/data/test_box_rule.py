"""The one box rule at load (clip, drop, count, report once) and the COCO id checks."""
import uuid

import pytest
from detectron2.data import DatasetCatalog

from _coco_records import ann, register_coco
from fpn_plugin.data import register_custom_dataset


def test_coco_boxes_are_clipped_dropped_and_reported_once(tmp_path, caplog):
    name = register_coco(tmp_path, [
        ann(1, [10, 10, 20, 20]),               # fine
        ann(2, [30, 30, 0, 10]),                # zero width
        ann(3, [30, 30, float("nan"), 10]),     # NaN width (written as NaN by json)
        ann(4, [30, 30, -5, 10]),               # negative width
        ann(5, [90, 70, 30, 30]),               # partly outside: clipped to 100x80
        ann(6, [200, 200, 10, 10]),             # wholly outside: dropped
        ann(7, [5, 5, 10, 10], iscrowd=1),      # crowd: kept, counted
    ])
    with caplog.at_level("INFO", logger="fpn_plugin.data.boxes"):
        records = DatasetCatalog.get(name)
    anns = records[0]["annotations"]
    assert [a["bbox"] for a in anns] == [[10.0, 10.0, 30.0, 30.0], [90.0, 70.0, 100.0, 80.0], [5.0, 5.0, 15.0, 15.0]]
    assert [a.get("iscrowd", 0) for a in anns] == [0, 0, 1]
    message = [r.getMessage() for r in caplog.records if r.name == "fpn_plugin.data.boxes"]
    assert message == [
        f"{name}: dropped 4 of 7 boxes: 1 NaN/inf (annotation 3), 1 outside the image (annotation 6), "
        "2 zero or negative size (annotation 2, annotation 4); clipped 1 boxes to their image "
        "(annotation 5); 1 crowd boxes kept (ignored in training, as by detectron2)"
    ]


@pytest.mark.parametrize("problem, expected", [
    ("duplicate image", r"1 image ids appear twice or more \(\[1\]\)"),
    ("duplicate annotation", r"1 annotation ids appear twice or more \(\[5\]\)"),
    ("unknown image", r"1 annotations belong to no listed image \(annotation \[6\]\)"),
    ("unknown category", r"category id that is not in 'categories' \(annotation, category: \[\(7, 9\)\]\)"),
])
def test_coco_id_problems_are_errors_naming_the_file_and_ids(tmp_path, problem, expected):
    images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}]
    anns = [ann(5, [1, 1, 5, 5])]
    if problem == "duplicate image":
        images.append({"id": 1, "file_name": "b.png", "width": 100, "height": 80})
    elif problem == "duplicate annotation":
        anns.append(ann(5, [2, 2, 5, 5]))
    elif problem == "unknown image":
        anns.append(dict(ann(6, [2, 2, 5, 5]), image_id=42))
    else:
        anns.append(dict(ann(7, [2, 2, 5, 5]), category_id=9))
    name = register_coco(tmp_path, anns, images=images)
    with pytest.raises(ValueError, match=r"ann.json: .*" + expected):
        DatasetCatalog.get(name)


def test_voc_boxes_without_extent_are_dropped_not_made_one_pixel(tmp_path, caplog):
    from PIL import Image

    folder = tmp_path / "voc"
    folder.mkdir()
    Image.new("RGB", (64, 48)).save(folder / "p.png")
    objects = "".join(
        f"<object><name>cat</name><bndbox><xmin>{a}</xmin><ymin>5</ymin><xmax>{b}</xmax><ymax>20</ymax></bndbox></object>"
        for a, b in ((5, 30), (12, 12), (30, 10)))  # fine, xmin == xmax, xmin > xmax
    (folder / "p.xml").write_text(f"<annotation><filename>p.png</filename><size><width>64</width>"
                                  f"<height>48</height></size>{objects}</annotation>")
    name = "vocrule_" + uuid.uuid4().hex[:6]
    register_custom_dataset(name, {"FORMAT": "voc_folder", "DIR": str(folder)})
    with caplog.at_level("WARNING", logger="fpn_plugin.data.boxes"):
        (record,) = DatasetCatalog.get(name)
    assert [a["bbox"] for a in record["annotations"]] == [[4.0, 4.0, 30.0, 20.0]]
    assert "dropped 2 of 3 boxes: 2 zero or negative size" in caplog.text and "p.png object 1" in caplog.text


def test_a_clean_dataset_says_so_in_one_line(caplog):
    import logging

    from detectron2.structures import BoxMode

    from fpn_plugin.data.boxes import apply_box_rule

    records = [{"file_name": "a.png", "width": 50, "height": 40,
                "annotations": [{"bbox": [1, 2, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]}]
    with caplog.at_level(logging.INFO, logger="fpn_plugin.data.boxes"):
        apply_box_rule(records, "clean_set")
    assert "clean_set: all 1 boxes kept as they are" in caplog.text
    assert records[0]["annotations"][0]["bbox"] == [1.0, 2.0, 11.0, 12.0]
