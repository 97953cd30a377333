"""A sweep of bad inputs, each written here, each with the outcome it must get.

Outcomes: "error" (an exception whose message names the file or key and matches), "dropped" /
"clipped" (the box rule, reported), "warned" (a log line naming it), "skipped" (a counted,
named skip), "read" (handled as a real user would want). The table in datasets/README.md
lists the same cases.
"""
import logging
import pickle
import uuid
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

import fpn_plugin  # noqa: F401
from fpn_plugin.checkpoint.safe_load import load_checkpoint_file
from _coco_records import ann, register_coco
from fpn_plugin.data import register_custom_dataset
from fpn_plugin.data.custom import read_split_file
from fpn_plugin.inference.images import ImageLoadError, load_image


# ---- images (predict.py / Predictor read them with load_image) -------------------------------
def _png(path, size=(40, 30), mode="RGB"):
    Image.new(mode, size, 128 if mode in ("L", "I;16") else (120, 60, 30)).save(path)
    return path


IMAGES = {
    "missing file": (lambda p: p, "error", r"no such file"),
    "empty file": (lambda p: (p.write_bytes(b""), p)[1], "error", r"not a readable image"),
    "text named .jpg": (lambda p: (p.write_text("hello"), p)[1], "error", r"not a readable image"),
    "truncated PNG": (lambda p: (_png(p), p.write_bytes(p.read_bytes()[:60]), p)[2], "error", r"not a readable image"),
    "grayscale": (lambda p: _png(p, mode="L"), "read", None),
    "RGBA": (lambda p: _png(p, mode="RGBA"), "read", None),
    "16-bit": (lambda p: _png(p, mode="I;16"), "read", None),
    "animated GIF": (lambda p: (Image.new("RGB", (8, 6), (200, 0, 0)).save(
        p, save_all=True, append_images=[Image.new("RGB", (8, 6), (0, 200, 0))]), p)[1], "read", None),
}


@pytest.mark.parametrize("case", sorted(IMAGES))
def test_bad_images(tmp_path, case):
    make, outcome, message = IMAGES[case]
    suffix = ".gif" if "GIF" in case else ".jpg" if "jpg" in case else ".png"
    path = make(tmp_path / f"input{suffix}")
    if outcome == "error":
        with pytest.raises(ImageLoadError, match=message) as info:
            load_image(str(path))
        assert str(path) in str(info.value)
    else:
        image = load_image(str(path))
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


# ---- COCO records ------------------------------------------------------------------------------
COCO = {
    "zero-area box": ([ann(1, [5, 5, 0, 0])], "dropped", "1 zero or negative size (annotation 1)"),
    "negative width": ([ann(1, [5, 5, -3, 4])], "dropped", "1 zero or negative size (annotation 1)"),
    "NaN width": ([ann(1, [5, 5, float("nan"), 4])], "dropped", "1 NaN/inf (annotation 1)"),
    "infinite height": ([ann(1, [5, 5, 4, float("inf")])], "dropped", "1 NaN/inf (annotation 1)"),
    "box partly outside": ([ann(1, [90, 70, 30, 30])], "clipped", "clipped 1 boxes to their image (annotation 1)"),
    "box wholly outside": ([ann(1, [300, 300, 5, 5])], "dropped", "1 outside the image (annotation 1)"),
    "bbox of strings": ([ann(1, ["a", "b", "c", "d"])], "dropped", "1 not 4 numbers (annotation 1)"),
    "bbox of 3 values": ([ann(1, [5, 5, 9])], "dropped", "1 not 4 numbers (annotation 1)"),
    "crowd box": ([ann(1, [5, 5, 9, 9], iscrowd=1)], "warned", "1 crowd boxes kept"),
    "duplicate annotation id": ([ann(1, [5, 5, 9, 9]), ann(1, [6, 6, 9, 9])], "error", "annotation ids appear twice"),
    "unknown category id": ([ann(1, [5, 5, 9, 9], category_id=5)], "error", "category id that is not in 'categories'"),
    "annotation of an unknown image": ([ann(1, [5, 5, 9, 9], image_id=7)], "error", "belong to no listed image"),
    "duplicate image id": ([ann(1, [5, 5, 9, 9])], "error", "image ids appear twice"),
}


@pytest.mark.parametrize("case", sorted(COCO))
def test_bad_coco_records(tmp_path, caplog, case):
    annotations, outcome, message = COCO[case]
    images = None
    if case == "duplicate image id":
        images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}] * 2
    name = register_coco(tmp_path, annotations, images=images)
    if outcome == "error":
        with pytest.raises(ValueError, match=message) as info:
            DatasetCatalog.get(name)
        assert "ann.json" in str(info.value)
        return
    with caplog.at_level(logging.INFO, logger="fpn_plugin.data.boxes"):
        (record,) = DatasetCatalog.get(name)
    assert f"{name}: " in caplog.text and message in caplog.text
    assert len(record["annotations"]) == (0 if outcome == "dropped" else 1)


# ---- VOC XML -----------------------------------------------------------------------------------
def _voc(tmp_path, body, name_xml="p.xml"):
    folder = tmp_path / "voc"
    folder.mkdir(exist_ok=True)
    _png(folder / "p.png", size=(64, 48))
    (folder / name_xml).write_text(body)
    name = "sweepvoc_" + uuid.uuid4().hex[:6]
    return folder, name


def _xml(box, extra=""):
    x0, y0, x1, y1 = box
    return (f"<annotation><filename>p.png</filename><size><width>64</width><height>48</height></size>"
            f"<object><name>cat</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox>{extra}</object></annotation>")


VOC = {
    "xmin > xmax": (_xml((30, 5, 10, 20)), "dropped", "1 zero or negative size"),
    "xmin == xmax": (_xml((12, 5, 12, 20)), "dropped", "1 zero or negative size"),
    "box past the image": (_xml((50, 5, 90, 20)), "clipped", "clipped 1 boxes"),
    "malformed XML": ("<annotation><object>", "error", r"Cannot parse VOC annotation .*p.xml"),
    "object without bndbox": ("<annotation><filename>p.png</filename><object><name>cat</name></object></annotation>",
                              "error", r"p.xml: object 0 \('cat'\) has no valid <bndbox>"),
}


@pytest.mark.parametrize("case", sorted(VOC))
def test_bad_voc_xml(tmp_path, caplog, case):
    body, outcome, message = VOC[case]
    folder, name = _voc(tmp_path, body)
    if outcome == "error":
        with pytest.raises(ValueError, match=message):
            register_custom_dataset(name, {"FORMAT": "voc_folder", "DIR": str(folder), "CLASSES": ["cat"]})
            DatasetCatalog.get(name)
        return
    register_custom_dataset(name, {"FORMAT": "voc_folder", "DIR": str(folder)})
    with caplog.at_level(logging.INFO, logger="fpn_plugin.data.boxes"):
        (record,) = DatasetCatalog.get(name)
    assert message in caplog.text
    assert len(record["annotations"]) == (0 if outcome == "dropped" else 1)


# ---- split files and dataset declarations -------------------------------------------------------
SPLITS = {
    "empty split file": ("split.txt", "", r"lists no images"),
    "CSV without a file column": ("split.csv", "width,height\n1,2\n", r"has no file-name column"),
    "split naming a missing XML": ("split.txt", "p\nnot_there\n", r"1 annotation file\(s\) listed but missing"),
}


@pytest.mark.parametrize("case", sorted(SPLITS))
def test_bad_split_files(tmp_path, case):
    file_name, text, message = SPLITS[case]
    folder, name = _voc(tmp_path, _xml((5, 5, 20, 20)))
    (tmp_path / file_name).write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        register_custom_dataset(name, {"FORMAT": "voc_folder", "DIR": str(folder), "SPLIT": str(tmp_path / file_name)})
        DatasetCatalog.get(name)


DECLARATIONS = {
    "misspelled CLASSES": ({"FORMAT": "voc_folder", "CLASES": ["cat"]}, r"CLASES is not a key here. Did you mean CLASSES\?"),
    "SPLIT given to coco": ({"FORMAT": "coco", "JSON": "a.json", "IMAGES": ".", "SPLIT": "x.txt"}, r"SPLIT is not a key here \(used by FORMAT"),
    "unknown FORMAT": ({"FORMAT": "yolo"}, r"FORMAT is 'yolo'; use one of"),
    "coco without IMAGES": ({"FORMAT": "coco", "JSON": "a.json"}, r"needs \['IMAGES'\]"),
}


@pytest.mark.parametrize("case", sorted(DECLARATIONS))
def test_bad_dataset_declarations(tmp_path, case):
    spec, message = DECLARATIONS[case]
    folder, name = _voc(tmp_path, _xml((5, 5, 20, 20)))
    spec = dict(spec)
    if spec["FORMAT"] == "voc_folder":
        spec["DIR"] = str(folder)
    with pytest.raises(ValueError, match=message) as info:
        register_custom_dataset(name, spec)
    assert f"DATASETS.CUSTOM.{name}" in str(info.value)


def test_split_csv_with_a_filename_column_is_read(tmp_path):
    (tmp_path / "s.csv").write_text("filename,label\nimg/a.jpg,x\nb.png,y\nb.png,z\n")
    assert read_split_file(str(tmp_path / "s.csv")) == ["a", "b"]  # stems, each once


# ---- weights ------------------------------------------------------------------------------------
WEIGHTS = {
    "text file": (lambda p: p.write_text("weights: none"), r"is not a weights file: it is a text file"),
    "HTML page saved as .pth": (lambda p: p.write_text("<html><body>login</body></html>"), r"it is an HTML page"),
    "another zip": (lambda p: zipfile.ZipFile(p, "w").close(), r"it is a zip archive of \[\]"),
    "empty file": (lambda p: p.write_bytes(b""), r"it is empty \(0 bytes\)"),
    "a pickled list": (lambda p: torch.save([1, 2], p), r"holds a list, not a dict of weights"),
    "a pickle that runs code": (lambda p: p.write_bytes(pickle.dumps(_Payload(), protocol=2)),
                                r"refused"),
}


class _Payload:
    def __reduce__(self):
        import os
        return (os.getcwd, ())  # harmless, but a call: a weights reader must refuse it


@pytest.mark.parametrize("case", sorted(WEIGHTS))
def test_bad_weights(tmp_path, case):
    write, message = WEIGHTS[case]
    path = tmp_path / "weights.pth"
    write(path)
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint_file(SimpleNamespace(), str(path))
    assert str(path) in str(info.value)

