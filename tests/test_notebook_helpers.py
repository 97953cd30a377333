"""fpn_plugin.notebook: the config the notebook writes, its errors, the AP table and run()."""
import json
import re
import sys
import warnings
from pathlib import Path

import pytest

from fpn_plugin import notebook as nb
from fpn_plugin.notebook import run_config
from fpn_plugin import precision

ROOT = Path(__file__).resolve().parents[1]
SHAPES = str(ROOT / "configs" / "shapes_r18_fpn.yaml")
FPN_R50 = str(ROOT / "configs" / "fpn_r50.yaml")
SHARED = ROOT.parent / "shared" / "data"


def test_write_config_is_a_child_of_the_chosen_config(tmp_path):
    path = nb.write_config(str(tmp_path / "out"), SHAPES, ims_per_device=2, accumulation_steps=2,
                           image_size=160, precision="fp32", device="cpu",
                           extra={"SOLVER.BASE_LR": 0.005})
    assert path == str(tmp_path / "out" / "notebook_config.yaml")
    cfg = nb.load_config(path)
    base = nb.load_config(SHAPES)
    assert cfg.OUTPUT_DIR == str(tmp_path / "out")
    assert cfg.MODEL.DEVICE == "cpu"
    # The parameters, and everything else from the base config.
    assert (cfg.SOLVER.IMS_PER_DEVICE, cfg.SOLVER.ACCUMULATION_STEPS) == (2, 2)
    assert cfg.SOLVER.IMS_PER_BATCH == base.SOLVER.IMS_PER_BATCH  # the reference the trainer scales from
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (160,) and cfg.INPUT.MIN_SIZE_TEST == 160
    assert cfg.INPUT.MAX_SIZE_TRAIN == 267  # 160 * 1333 / 800
    assert cfg.SOLVER.AMP.ENABLED is False
    assert cfg.SOLVER.BASE_LR == 0.005
    assert cfg.MODEL.PLUGIN_RESNET.DEPTH == 18 and cfg.DATASETS.TRAIN == base.DATASETS.TRAIN


def test_iterations_rescale_steps_and_periods_but_keep_the_warmup(tmp_path):
    # shapes_r18_fpn: MAX_ITER 400, STEPS (300, 370), WARMUP 100, CHECKPOINT 200, EVAL 400.
    cfg = nb.load_config(nb.write_config(str(tmp_path), SHAPES, iterations=200, precision="fp32"))
    assert cfg.SOLVER.MAX_ITER == 200
    assert tuple(cfg.SOLVER.STEPS) == (150, 185)
    assert cfg.SOLVER.WARMUP_ITERS == 100
    assert cfg.SOLVER.CHECKPOINT_PERIOD == 100 and cfg.TEST.EVAL_PERIOD == 200
    short = nb.load_config(nb.write_config(str(tmp_path), SHAPES, iterations=40, precision="fp32"))
    assert short.SOLVER.WARMUP_ITERS == 20  # at most half the run
    assert tuple(short.SOLVER.STEPS) == (30, 37)
    # The validation loss's period too: one rule with batch scaling (engine.schedule).
    child = tmp_path / "with_val_loss.yaml"
    child.write_text(f"_BASE_: {SHAPES}\nTEST:\n  VAL_LOSS:\n    PERIOD: 100\n")
    val = nb.load_config(nb.write_config(str(tmp_path), str(child), iterations=200, precision="fp32"))
    assert val.TEST.VAL_LOSS.PERIOD == 50


def test_dataset_choices(tmp_path):
    cfg = nb.load_config(nb.write_config(str(tmp_path), FPN_R50, dataset="shapes", precision="fp32"))
    assert cfg.DATASETS.TRAIN == ("shapes_train",) and cfg.DATASETS.TEST == ("shapes_val",)
    with pytest.raises(ValueError, match="DATASET is 'imagenet'; choose one of"):
        nb.write_config(str(tmp_path), SHAPES, dataset="imagenet")
    with pytest.raises(FileNotFoundError, match="needs DATA_DIR"):
        nb.write_config(str(tmp_path), SHAPES, dataset="coco", data_dir="")
    with pytest.raises(FileNotFoundError, match=r"instances_val2017.json does not exist.*fetch_coco"):
        nb.write_config(str(tmp_path), SHAPES, dataset="coco", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs OWN_TRAIN"):
        nb.write_config(str(tmp_path), SHAPES, dataset="own", data_dir=str(tmp_path))


@pytest.mark.parametrize("native", [False, True])
def test_precision_choices_follow_the_policy(tmp_path, monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    with pytest.raises(ValueError, match="PRECISION 'fp16' needs CUDA, but the device is 'cpu'"):
        nb.write_config(str(tmp_path), SHAPES, precision="fp16", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # forced bf16 where it is emulated
        cfg = nb.load_config(nb.write_config(str(tmp_path), SHAPES, precision="bf16", device="cpu"))
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.PRECISION == "bf16"
    auto = run_config._precision_keys("auto", "cpu")
    assert auto == ({"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": "bf16"} if native
                    else {"SOLVER.AMP.ENABLED": False})
    cuda = run_config._precision_keys("auto", "cuda")
    assert cuda == {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": "fp16"}


@pytest.mark.skipif(not (SHARED / "facemask_coco").is_dir(),
                    reason=f"{SHARED}/facemask_coco is absent (a fresh clone has no shared data)")
def test_own_coco_data_registers_and_lists_test_images(tmp_path):
    root = SHARED / "facemask_coco"
    train_json = sorted(root.rglob("*.json"))[0]
    spec = {"FORMAT": "coco", "JSON": str(train_json.relative_to(root)),
            "IMAGES": str(_image_folder(root, train_json).relative_to(root))}
    path = nb.write_config(str(tmp_path), SHAPES, dataset="own", data_dir=str(root),
                           own_train=spec, own_val=spec, precision="fp32")
    cfg = nb.load_config(path)
    assert cfg.DATASETS.TRAIN == ("own_train",) and cfg.DATASETS.TEST == ("own_val",)
    images = nb.eval_images(path, count=3)
    assert len(images) == 3 and all(Path(p).is_file() for p in images)
    assert nb.eval_coco_json(path) == str(train_json)


def _image_folder(root: Path, json_file: Path) -> Path:
    first = json.loads(json_file.read_text())["images"][0]["file_name"]
    for folder in [json_file.parent, *root.rglob("*")]:
        if folder.is_dir() and (folder / first).is_file():
            return folder
    raise AssertionError(f"no folder under {root} holds {first}")


def test_print_ap_table_with_and_without_reference(tmp_path, capsys):
    out = tmp_path / "out"
    path = nb.write_config(str(out), SHAPES, precision="fp32")
    with pytest.raises(FileNotFoundError, match="evaluate first"):
        nb.print_ap_table(path)
    results = out / "inference" / "shapes_val" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"bbox": {"AP": 61.25, "AP50": 90.5, "APs": None, "AP50-circle": 99.0}}))
    rows = nb.print_ap_table(path)
    printed = re.sub(" +", " ", capsys.readouterr().out)  # the table's cells, not its padding
    assert rows == [["AP", 61.25], ["AP50", 90.5], ["APs", pytest.approx(float("nan"), nan_ok=True)]]
    assert "| AP50 | 90.50 |" in printed and "| APs | - |" in printed and "no published result" in printed

    # fpn_r50 names a published result: ours, the reference and the difference.
    ref_out = tmp_path / "ref"
    path = nb.write_config(str(ref_out), FPN_R50, dataset="shapes", precision="fp32")
    results = ref_out / "inference" / "shapes_val" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"bbox": {"AP": 30.0, "AP50": 50.0}}))
    rows = nb.print_ap_table(path)
    printed = re.sub(" +", " ", capsys.readouterr().out)
    assert "| metric | ours | reference | difference |" in printed
    assert "not a like-for-like comparison" in printed
    ap = next(r for r in rows if r[0] == "AP")
    assert ap[1] == 30.0 and ap[3] == pytest.approx(30.0 - ap[2])


def test_run_streams_output_and_raises_with_the_last_lines(capsys):
    nb.run(["-c", "print('hello from the child')"])
    assert "hello from the child" in capsys.readouterr().out
    with pytest.raises(nb.CommandFailed, match=r"exited with code 3(.|\n)*the reason"):
        nb.run(["-c", "import sys; print('the reason'); sys.exit(3)"])


def test_show_images_lists_what_it_displays(tmp_path, capsys):
    pytest.importorskip("IPython", reason="show_images needs IPython (pip install -e '.[dev]')")
    from PIL import Image

    for name in ("b.png", "a.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    assert nb.show_images(str(tmp_path / "*.png")) == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert nb.show_images(str(tmp_path / "*.jpg")) == []
    assert "(no images to show)" in capsys.readouterr().out
