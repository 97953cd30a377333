"""One way to unregister a dataset, and one class-name lookup for a config's datasets."""
import uuid

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

import fpn_plugin  # noqa: F401
from fpn_plugin.data.catalog import unregister
from fpn_plugin.data.register import config_class_names
from fpn_plugin.data.synthetic import SHAPE_CLASSES, ShapesSpec, register_shapes


def _named(classes=None):
    name = "catalog_" + uuid.uuid4().hex[:6]
    DatasetCatalog.register(name, lambda: [])
    if classes is not None:
        MetadataCatalog.get(name).set(thing_classes=list(classes))
    return name


def _cfg(train=(), test=()):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    return cfg


def test_unregister_removes_both_catalogs_and_lets_a_name_be_registered_again():
    name = _named(["a"])
    unregister(name)
    assert name not in DatasetCatalog.list() and name not in MetadataCatalog.list()
    unregister(name)  # not registered: nothing to do, no error
    DatasetCatalog.register(name, lambda: [{"file_name": "x"}])
    MetadataCatalog.get(name).set(thing_classes=["b"])  # no clash with the old ["a"]
    assert MetadataCatalog.get(name).thing_classes == ["b"]
    unregister(name)


def test_registering_the_shapes_again_replaces_them(tmp_path):
    names = ("catalog_shapes_train_" + uuid.uuid4().hex[:6], "catalog_shapes_val_" + uuid.uuid4().hex[:6])
    register_shapes(str(tmp_path / "a"), ShapesSpec(0, 2, 1, 64, 64), names)
    register_shapes(str(tmp_path / "b"), ShapesSpec(1, 2, 1, 64, 64), names)
    assert MetadataCatalog.get(names[0]).shapes_spec == (1, 2, 1, 64, 64)
    assert MetadataCatalog.get(names[0]).image_root.startswith(str(tmp_path / "b"))
    for name in names:
        unregister(name)


def test_config_class_names_reads_train_then_test_metadata_only():
    unnamed, train, test = _named(), _named(["cat", "dog"]), _named(["cat", "dog"])
    try:
        assert config_class_names(_cfg([unnamed, train], [test])) == ["cat", "dog"]
        assert config_class_names(_cfg([], [test])) == ["cat", "dog"]  # TEST when TRAIN has none
        # Not registered here (a config from another machine) or no metadata: None.
        assert config_class_names(_cfg(["not_registered_" + uuid.uuid4().hex[:6]], [unnamed])) is None
        assert config_class_names(_cfg()) is None
        assert config_class_names(_cfg(["shapes_train"])) == list(SHAPE_CLASSES)
    finally:
        for name in (unnamed, train, test):
            unregister(name)


def test_config_class_names_refuses_datasets_that_disagree():
    train, test = _named(["cat", "dog"]), _named(["dog", "cat"])
    try:
        with pytest.raises(ValueError, match=rf"Datasets '{train}' and '{test}' have different "
                           r"classes: \['cat', 'dog'\] vs \['dog', 'cat'\]"):
            config_class_names(_cfg([train], [test]))
    finally:
        unregister(train)
        unregister(test)
