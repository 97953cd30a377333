"""Unreadable training images are skipped by name, up to DATALOADER.MAX_UNREADABLE_FRACTION."""
import os

import pytest

from _tiny import register_synthetic, tiny_cfg

from fpn_plugin.engine import Trainer


def _spoil(folder):
    missing = os.path.join(folder, "001.png")
    os.remove(missing)
    truncated = os.path.join(folder, "002.png")
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 3])
    return missing, truncated


def _trainer(tmp_path, name, fraction):
    register_synthetic(name, str(tmp_path / "data"), num_images=8)
    missing, truncated = _spoil(str(tmp_path / "data" / name))
    cfg = tiny_cfg(str(tmp_path / "out"), name, max_iter=6)
    cfg.DATALOADER.MAX_UNREADABLE_FRACTION = fraction
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer, missing, truncated


@pytest.mark.slow
def test_unreadable_images_are_skipped_by_name_within_the_limit(tmp_path, caplog):
    trainer, missing, truncated = _trainer(tmp_path, "unreadable_ok", 0.25)  # 2 of 8 allowed
    with caplog.at_level("WARNING", logger="fpn_plugin.engine.loaders"):
        trainer.train()
    assert trainer.iter == 6 and (tmp_path / "out" / "model_final.pth").is_file()
    assert f"Skipping an unreadable training image (1 of at most 2): " in caplog.text
    assert missing in caplog.text and truncated in caplog.text
    assert "truncated" in caplog.text.lower()


@pytest.mark.slow
def test_past_the_limit_training_stops_with_the_list(tmp_path):
    trainer, missing, truncated = _trainer(tmp_path, "unreadable_stop", 0.1)  # 1 of 8 allowed
    with pytest.raises(RuntimeError, match=r"2 training images could not be read, more than the 1") as info:
        trainer.train()
    assert missing in str(info.value) and truncated in str(info.value)
    assert "DATALOADER.MAX_UNREADABLE_FRACTION" in str(info.value)


def test_evaluation_names_an_image_it_cannot_read(tmp_path):
    register_synthetic("unreadable_val", str(tmp_path / "data"), num_images=3)
    os.remove(os.path.join(str(tmp_path / "data" / "unreadable_val"), "001.png"))
    cfg = tiny_cfg(str(tmp_path / "out"), "unreadable_val")
    cfg.DATASETS.TEST = ("unreadable_val",)
    model = Trainer.build_model(cfg)
    with pytest.raises(RuntimeError, match=r"Evaluation cannot read the image .*001.png \(FileNotFoundError"):
        Trainer.test(cfg, model)


def test_the_check_at_start_leaves_unreadable_images_out_before_the_first_step(tmp_path, caplog):
    register_synthetic("unreadable_first", str(tmp_path / "data"), num_images=8)
    missing, truncated = _spoil(str(tmp_path / "data" / "unreadable_first"))
    cfg = tiny_cfg(str(tmp_path / "out"), "unreadable_first", max_iter=6)
    cfg.DATALOADER.MAX_UNREADABLE_FRACTION = 0.25
    cfg.DATALOADER.CHECK_IMAGES_AT_START = True
    with caplog.at_level("INFO", logger="fpn_plugin.engine.loaders"):
        trainer = Trainer(cfg)
    assert "Checked the 8 training images before training" in caplog.text
    assert "2 unreadable, left out" in caplog.text
    assert f"Leaving out an unreadable training image: {missing}" in caplog.text
    assert truncated in caplog.text
    # The sampler draws from the 6 readable images only: nothing is skipped mid-run.
    caplog.clear()
    trainer.resume_or_load(resume=False)
    with caplog.at_level("WARNING", logger="fpn_plugin.engine.loaders"):
        trainer.train()
    assert "Skipping an unreadable training image" not in caplog.text
    assert trainer.iter == 6


def test_the_check_at_start_stops_past_the_limit_before_training(tmp_path):
    register_synthetic("unreadable_first_stop", str(tmp_path / "data"), num_images=8)
    missing, truncated = _spoil(str(tmp_path / "data" / "unreadable_first_stop"))
    cfg = tiny_cfg(str(tmp_path / "out"), "unreadable_first_stop", max_iter=6)
    cfg.DATALOADER.MAX_UNREADABLE_FRACTION = 0.1
    cfg.DATALOADER.CHECK_IMAGES_AT_START = True
    with pytest.raises(RuntimeError, match=r"2 training images could not be read, more than the 1") as info:
        Trainer(cfg)
    assert missing in str(info.value) and truncated in str(info.value)


def test_drop_unreadable_images_keeps_a_clean_list_as_it_is(tmp_path):
    from PIL import Image

    from fpn_plugin.engine.loaders import drop_unreadable_images

    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    dicts = [{"file_name": str(tmp_path / "a.png")}]
    assert drop_unreadable_images(dicts, limit=0) is dicts
    dicts.append({"file_name": str(tmp_path / "gone.png")})
    with pytest.raises(RuntimeError, match=r"1 training images could not be read, more than the 0"):
        drop_unreadable_images(dicts, limit=0)
    assert drop_unreadable_images(dicts, limit=1) == dicts[:1]
