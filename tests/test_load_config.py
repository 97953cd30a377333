"""load_config: the one way a config file and overrides are read; unknown keys name the fix."""
from pathlib import Path

import pytest

from fpn_plugin.config import load_config

FPN_R18 = Path(__file__).parents[1] / "configs" / "fpn_r18.yaml"


def test_a_misspelt_key_in_the_file_names_the_file_the_key_and_the_closest_one(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(f"_BASE_: {FPN_R18}\nMODEL:\n  PLUGIN_WEIGHTS:\n    FORMAT_CHEK: True\n")
    with pytest.raises(KeyError) as info:
        load_config(str(path))
    message = str(info.value)
    assert f"{path}: MODEL.PLUGIN_WEIGHTS.FORMAT_CHEK is not a config key" in message
    assert "Did you mean MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK?" in message
    assert "ALLOW_UNSAFE_PICKLE, FORMAT_CHECK" in message


def test_a_misspelt_override_names_the_closest_key_and_an_unknown_node_the_top_level():
    with pytest.raises(KeyError, match=r"the command-line overrides: SOLVER.BASE_LRR is not a config key. "
                                       r"Did you mean SOLVER.BASE_LR\?"):
        load_config(None, ["SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(KeyError, match=r"MODELL.X is not a config key. Did you mean MODEL\? The keys of the config"):
        load_config(None, ["MODELL.X", "1"])
    with pytest.raises(KeyError, match=r"DATALOADER.CHECK_IMAGES_AT_STRAT .* Did you mean DATALOADER.CHECK_IMAGES_AT_START"):
        load_config(None, ["DATALOADER.CHECK_IMAGES_AT_STRAT", "True"])


def test_file_then_overrides_are_merged():
    cfg = load_config(str(FPN_R18), ["SOLVER.BASE_LR", "0.5"])
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.MODEL.BACKBONE.NAME.startswith("build_plugin")
    assert "PLUGIN_WEIGHTS" in cfg.MODEL  # fpn_plugin's keys are there


def test_setup_config_resolves_the_device_and_registers_or_loads_the_configs_datasets(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from fpn_plugin.config import setup_config

    (tmp_path / "parts").mkdir()
    name = f"parts_{tmp_path.name}"
    path = tmp_path / "c.yaml"
    path.write_text(f"_BASE_: {FPN_R18}\nMODEL:\n  DEVICE: auto\nDATASETS:\n  CUSTOM:\n"
                    f"    {name}: {{FORMAT: voc_folder, DIR: parts, CLASSES: [cat, dog]}}\n"
                    f"  TRAIN: ('{name}',)\n  TEST: ()\n")
    try:
        # Prediction: registered for the class names, nothing loaded, NUM_CLASSES untouched.
        cfg = setup_config(str(path), device="cpu", datasets="register")
        assert cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80
        assert MetadataCatalog.get(name).thing_classes == ["cat", "dog"]
        # Training: loaded, NUM_CLASSES follows the data; "auto" resolved.
        cfg = setup_config(str(path), ["SOLVER.BASE_LR", "0.5"])
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2 and cfg.SOLVER.BASE_LR == 0.5
        assert cfg.MODEL.DEVICE in ("cpu", "cuda")
        with pytest.raises(ValueError, match="datasets must be one of"):
            setup_config(str(path), datasets="yes")
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
