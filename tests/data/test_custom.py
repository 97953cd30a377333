"""Datasets declared in the config: COCO JSON, VOCdevkit and flat VOC folders; NUM_CLASSES."""
import os
import shutil
import uuid

import pytest

import fpn_plugin
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES

from fpn_plugin.data import register_custom_dataset, setup_datasets
from fpn_plugin.evaluation import evaluator_kind


def _cfg(tmp_path, yaml_text):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml_text)
    cfg = get_cfg()
    fpn_plugin.add_fpn_plugin_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg, str(path)


def _uid():
    return uuid.uuid4().hex[:6]


def test_voc_subset_and_facemask_register_from_a_config(tmp_path, voc_subset, facemask):
    # Relative paths are found next to the config file: link the shared data there.
    os.symlink(voc_subset.parents[1], tmp_path / "voc")
    u = _uid()
    cfg, path = _cfg(tmp_path, f"""
DATASETS:
  CUSTOM:
    vocsub_train_{u}: {{FORMAT: vocdevkit, DIR: voc/VOCdevkit/VOC2007, SPLIT: train}}
    vocsub_val_{u}: {{FORMAT: vocdevkit, DIR: voc/VOCdevkit/VOC2007, SPLIT: val, YEAR: 2007}}
    mask_val_{u}: {{FORMAT: coco, JSON: {facemask}/annotations/custom_val.json,
                   IMAGES: {facemask}/val2017}}
  TRAIN: ("vocsub_train_{u}",)
  TEST: ("vocsub_val_{u}",)
""")
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80  # detectron2's default: "not set"
    assert setup_datasets(cfg, path) == 20
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20
    train = DatasetCatalog.get(f"vocsub_train_{u}")
    val = DatasetCatalog.get(f"vocsub_val_{u}")
    assert (len(train), len(val)) == (240, 60)
    anns = [a for d in train + val for a in d["annotations"]]
    assert len(anns) == 924 and sum(a["difficult"] for a in anns) == 215
    # Class names from the data are the 20 VOC classes, in detectron2's (alphabetical) order.
    assert MetadataCatalog.get(f"vocsub_train_{u}").thing_classes == list(CLASS_NAMES)
    assert train[0]["file_name"].endswith("JPEGImages/000001.jpg") and os.path.isfile(train[0]["file_name"])
    assert evaluator_kind(f"vocsub_val_{u}") == "voc"

    masks = DatasetCatalog.get(f"mask_val_{u}")
    meta = MetadataCatalog.get(f"mask_val_{u}")
    # Category ids 0..2 map to contiguous 0..2 by id; names come from the JSON.
    assert meta.thing_classes == ["mask_weared_incorrect", "with_mask", "without_mask"]
    assert meta.thing_dataset_id_to_contiguous_id == {0: 0, 1: 1, 2: 2}
    assert len(masks) == 171 and sum(len(d["annotations"]) for d in masks) == 915
    assert evaluator_kind(f"mask_val_{u}") == "coco"


def test_num_classes_mismatch_says_both_numbers(tmp_path, facemask):
    u = _uid()
    cfg, path = _cfg(tmp_path, f"""
MODEL: {{ROI_HEADS: {{NUM_CLASSES: 5}}}}
DATASETS:
  CUSTOM:
    mask_train_{u}: {{FORMAT: coco, JSON: annotations/custom_train.json, IMAGES: train2017}}
  ROOT: {facemask}
  TRAIN: ("mask_train_{u}",)
  TEST: ()
""")
    cfg.DATASETS.ROOT = ""  # relative to the root without re-registering the builtin datasets
    register_custom_dataset(f"mask_train_{u}", cfg.DATASETS.CUSTOM[f"mask_train_{u}"], path,
                            str(facemask))
    cfg.DATASETS.CUSTOM.clear()
    with pytest.raises(ValueError, match=r"NUM_CLASSES is 5 but the data .* has 3 classes"):
        setup_datasets(cfg, path)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    assert setup_datasets(cfg, path) == 3


def _flat_folder(voc_subset, dest, ids):
    dest.mkdir()
    for i in ids:
        shutil.copy(voc_subset / "Annotations" / f"{i}.xml", dest)
        shutil.copy(voc_subset / "JPEGImages" / f"{i}.jpg", dest)
    return dest


def test_flat_voc_folder_and_class_mismatch(tmp_path, voc_subset):
    u = _uid()
    a = _flat_folder(voc_subset, tmp_path / "a", ["000001", "000002", "000004"])
    b = _flat_folder(voc_subset, tmp_path / "b", ["000006", "000008"])
    classes = register_custom_dataset(f"flat_a_{u}", {"FORMAT": "voc_folder", "DIR": str(a)})
    dicts = DatasetCatalog.get(f"flat_a_{u}")
    assert [d["image_id"] for d in dicts] == ["000001", "000002", "000004"]
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    names = {classes[x["category_id"]] for d in dicts for x in d["annotations"]}
    assert names == set(classes)  # from the data: exactly the classes present
    assert evaluator_kind(f"flat_a_{u}") == "voc"
    register_custom_dataset(f"flat_b_{u}", {"FORMAT": "voc_folder", "DIR": str(b)})
    cfg = get_cfg()
    fpn_plugin.add_fpn_plugin_config(cfg)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (f"flat_a_{u}",), (f"flat_b_{u}",)
    with pytest.raises(ValueError, match="have different classes.*list the same CLASSES"):
        setup_datasets(cfg)
    # Listing the classes fixes it; an object of an unlisted class is an error naming it.
    listed = list(CLASS_NAMES)
    register_custom_dataset(f"flat_a_{u}", {"FORMAT": "voc_folder", "DIR": str(a), "CLASSES": listed})
    register_custom_dataset(f"flat_b_{u}", {"FORMAT": "voc_folder", "DIR": str(b), "CLASSES": listed})
    assert setup_datasets(cfg) == 20
    register_custom_dataset(f"flat_c_{u}", {"FORMAT": "voc_folder", "DIR": str(b), "CLASSES": ["dog"]})
    with pytest.raises(ValueError, match=r"000006.xml: object 0 has class '\w+', which is not one of the 1"):
        DatasetCatalog.get(f"flat_c_{u}")


def test_bad_declarations_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"FORMAT is 'yolo'; use one of"):
        register_custom_dataset("x_" + _uid(), {"FORMAT": "yolo"})
    with pytest.raises(ValueError, match=r"needs \['JSON', 'IMAGES'\]"):
        register_custom_dataset("x_" + _uid(), {"FORMAT": "coco"})
    with pytest.raises(FileNotFoundError, match="DIR = 'nowhere/VOC2007' was not found; looked at: .*cfg_dir/nowhere/VOC2007, .*root/nowhere/VOC2007"):
        register_custom_dataset("x_" + _uid(), {"FORMAT": "vocdevkit", "DIR": "nowhere/VOC2007", "SPLIT": "train"},
                                config_file=str(tmp_path / "cfg_dir" / "a.yaml"), root=str(tmp_path / "root"))
    with pytest.raises(ValueError, match="already a registered dataset"):
        register_custom_dataset("coco_2017_val", {"FORMAT": "voc_folder", "DIR": str(tmp_path)})


def test_datasets_root_moves_the_builtin_coco_and_voc(tmp_path):
    from fpn_plugin.data.builtin import register_builtin_under

    try:
        register_builtin_under(str(tmp_path))
        assert MetadataCatalog.get("coco_2017_val").json_file == str(
            tmp_path / "coco" / "annotations" / "instances_val2017.json")
        assert MetadataCatalog.get("coco_2017_val").thing_classes[0] == "person"
        assert MetadataCatalog.get("voc_2007_test").dirname == str(tmp_path / "VOC2007")
        assert MetadataCatalog.get("voc_2007_test").evaluator_type == "pascal_voc"
        assert evaluator_kind("voc_0712_trainval") == "voc"
    finally:
        register_builtin_under(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    assert MetadataCatalog.get("voc_2007_test").dirname == os.path.join(
        os.environ.get("DETECTRON2_DATASETS", "datasets"), "VOC2007")


def _voc_xml(path, image_name, objects, size=(64, 48)):
    boxes = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.write_text(f"<annotation><filename>{image_name}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{boxes}</annotation>")


def _generated_flat_folder(folder, count=6):
    """A flat folder of PNG images and VOC XMLs named img0..img<count-1>."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (64, 48), (i * 30, 80, 80)).save(folder / f"img{i}.png")
        _voc_xml(folder / f"img{i}.xml", f"img{i}.png", [("cat" if i % 2 else "dog", (5, 5, 30 + i, 30))])
    return folder


def test_unknown_and_misplaced_keys_are_errors_naming_them(tmp_path):
    folder = _generated_flat_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match=r"DATASETS.CUSTOM.\w+.CLASES is not a key here. Did you mean CLASSES\? "
                                         r"The keys here are: FORMAT, DIR, ANNOTATIONS, IMAGES, SPLIT, YEAR, CLASSES"):
        register_custom_dataset("x_" + _uid(), {"FORMAT": "voc_folder", "DIR": str(folder), "CLASES": ["cat"]})
    with pytest.raises(ValueError, match=r"\.SPLIT is not a key here \(used by FORMAT vocdevkit and voc_folder\)"):
        register_custom_dataset("x_" + _uid(), {"FORMAT": "coco", "JSON": "a.json", "IMAGES": "i", "SPLIT": "train"})


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_a_flat_folder_takes_a_split_and_shared_images_are_reported(tmp_path, caplog, kind):
    folder = _generated_flat_folder(tmp_path / "flat")
    if kind == "txt":  # VOC ImageSets style: one id per line
        (tmp_path / "train.txt").write_text("img0\nimg1\nimg2\nimg3\n")
        (tmp_path / "val.txt").write_text("img3\nimg4\nimg5\n")
    else:  # as exported datasets have it: a CSV with a filename column
        (tmp_path / "train.csv").write_text("filename,width\nimg0.png,64\nimg1.png,64\nimg2.png,64\nimg3.png,64\n")
        (tmp_path / "val.csv").write_text("filename,width\nimg3.png,64\nimg4.png,64\nimg5.png,64\n")
    u = _uid()
    cfg, path = _cfg(tmp_path, f"""
DATASETS:
  CUSTOM:
    tr_{u}: {{FORMAT: voc_folder, DIR: flat, SPLIT: train.{kind}}}
    va_{u}: {{FORMAT: voc_folder, DIR: flat, SPLIT: val.{kind}}}
  TRAIN: ("tr_{u}",)
  TEST: ("va_{u}",)
""")
    with caplog.at_level("WARNING", logger="fpn_plugin.data.register"):
        assert setup_datasets(cfg, path) == 2
    assert [d["image_id"] for d in DatasetCatalog.get(f"tr_{u}")] == ["img0", "img1", "img2", "img3"]
    assert [d["image_id"] for d in DatasetCatalog.get(f"va_{u}")] == ["img3", "img4", "img5"]
    assert f"1 images of the test dataset va_{u} are also in the training data (tr_{u})" in caplog.text
    assert "img3.png" in caplog.text


def test_a_split_csv_without_a_file_column_is_explained(tmp_path):
    folder = _generated_flat_folder(tmp_path / "flat")
    (tmp_path / "bad.csv").write_text("width,height\n64,48\n")
    with pytest.raises(ValueError, match=r"bad.csv has no file-name column: it needs one of \['filename'"):
        register_custom_dataset("x_" + _uid(), {"FORMAT": "voc_folder", "DIR": str(folder), "SPLIT": str(tmp_path / "bad.csv")})
