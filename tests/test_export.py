"""fpn_plugin.export: the exported TorchScript and ONNX files give the eager model's detections.

Each family (ResNet-FPN, ResNet C4, VGG16) is exported from a randomly initialised model saved
to a file, traced on a 320x256 (WxH) sample image, then run on a 416x288 image, which the
resize rule makes 370x256: another size than the trace saw. Its detections must equal those of
the project's eager ``Predictor`` on that image: same count and classes, boxes within
``BOX_ATOL`` pixels (original image coordinates), scores within ``SCORE_ATOL``. CPU, fp32.
"""
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.modeling import build_model

from fpn_plugin.config import load_config
from fpn_plugin.data import setup_datasets
from fpn_plugin.export import ExportError, OnnxPredictor, TorchScriptPredictor, export_model, load_exported
from fpn_plugin.export import compare, exporter, tracing
from fpn_plugin.export.exporter import load_model
from fpn_plugin.export.__main__ import main

# fp32 on one CPU: the TorchScript file runs the eager kernels (measured 0 difference), ONNX
# Runtime its own convolutions (measured up to 1e-4 px and 3e-7 in score).
BOX_ATOL = 1e-2  # pixels
SCORE_ATOL = 1e-4

# Small inputs and few proposals keep each export to seconds; a score threshold of 0 keeps
# the random model's detections so that there is something to compare.
SMALL = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
         "TEST.DETECTIONS_PER_IMAGE", "20", "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "416",
         "MODEL.RPN.PRE_NMS_TOPK_TEST", "256", "MODEL.RPN.POST_NMS_TOPK_TEST", "64"]
FAMILIES = {
    "resnet_fpn": ("configs/fpn_r18.yaml", []),
    "resnet_c4": ("configs/r50_c4_voc07.yaml", ["MODEL.PLUGIN_RESNET.DEPTH", "18"]),
    "vgg16": ("configs/vgg16_voc07.yaml", []),
}
SAMPLE_HW, TEST_HW = (256, 320), (288, 416)


def _image(hw, seed):
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def _opts(family):
    return SMALL + FAMILIES[family][1]


def _write_weights(family, path):
    config_file, _ = FAMILIES[family]
    cfg = load_config(config_file, _opts(family) + ["MODEL.WEIGHTS", ""])
    setup_datasets(cfg, config_file)
    torch.manual_seed(0)
    model = build_model(cfg)  # detectron2's random initialisation
    torch.save({"model": model.state_dict()}, path)  # the checkpointer's {"model": ...} format
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """family -> a weights file of a random model, written on first use."""
    made = {}
    folder = tmp_path_factory.mktemp("export_weights")

    def get(family):
        if family not in made:
            made[family] = _write_weights(family, folder / f"{family}.pth")
        return made[family]

    yield get
    shutil.rmtree(folder, ignore_errors=True)  # VGG16's is 550 MB


@pytest.fixture(scope="module")
def sample_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("export_sample") / "sample.png"
    Image.fromarray(_image(SAMPLE_HW, seed=1)).save(path)
    return str(path)


def _assert_same_detections(exported, eager):
    """Same count (> 0), classes, and boxes/scores within the atols, in score order."""
    a, b = exported["instances"], eager["instances"]
    assert len(b) > 0, "the eager model found nothing to compare"
    assert len(a) == len(b)
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=BOX_ATOL)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=SCORE_ATOL)
    assert a.image_size == b.image_size == TEST_HW


def _eager(family, weights_path):
    config_file = FAMILIES[family][0]
    _, predictor = load_model(config_file, weights_path, _opts(family))
    assert predictor.cfg.MODEL.DEVICE == "cpu" and predictor.precision == "fp32"
    assert next(predictor.model.parameters()).dtype == torch.float32
    return predictor


def _parity(family, fmt, runner_class, weights, sample_image, out):
    config_file = FAMILIES[family][0]
    export_model(config_file, weights(family), fmt, str(out), sample_image=sample_image,
                 opts=_opts(family), check=False)  # the test is the check here
    image = _image(TEST_HW, seed=2)
    runner = load_exported(str(out))  # the runner of the folder's format
    assert type(runner) is runner_class
    exported = runner(image, "RGB")
    _assert_same_detections(exported, _eager(family, weights(family))(image, "RGB"))
    shutil.rmtree(out)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["resnet_c4", "vgg16"])
def test_torchscript_matches_eager_at_another_size(family, weights, sample_image, tmp_path):
    _parity(family, "torchscript", TorchScriptPredictor, weights, sample_image, tmp_path / "ts")


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_matches_eager_at_another_size(family, weights, sample_image, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install 'fpn-plugin[export]')")
    pytest.importorskip("onnxruntime", reason="running the ONNX file needs onnxruntime")
    _parity(family, "onnx", OnnxPredictor, weights, sample_image, tmp_path / "onnx")


def test_load_exported_refuses_a_folder_without_export_json(tmp_path):
    with pytest.raises(ValueError, match="no export.json"):
        load_exported(str(tmp_path))


@pytest.mark.slow
def test_cli_exports_resnet_fpn_torchscript_with_its_contract(weights, sample_image, tmp_path, capsys):
    out = tmp_path / "ts"
    argv = ["--config-file", "configs/fpn_r18.yaml", "--weights", weights("resnet_fpn"),
            "--format", "torchscript", "--output", str(out), "--sample-image", sample_image]
    assert main(argv + SMALL) == 0
    assert "model.ts" in capsys.readouterr().out
    meta = json.loads((out / "export.json").read_text())
    assert meta["input_format"] == "RGB" and meta["sample_size"] == list(SAMPLE_HW)
    assert len(meta["class_names"]) == 80  # coco_2017_val's names: the file carries none
    assert meta["resize"]["min_size_test"] == 256 and meta["resize"]["max_size_test"] == 416
    assert meta["pixel_mean"] == [123.675, 116.28, 103.53]
    assert meta["versions"]["torch"] == torch.__version__
    # The export-time check ran on the sample and its transpose, within its tolerances.
    assert meta["check"]["max_box_diff"] <= compare.BOX_ATOL
    assert meta["check"]["max_score_diff"] <= compare.SCORE_ATOL
    image = _image(TEST_HW, seed=2)
    _assert_same_detections(TorchScriptPredictor(str(out))(image, "RGB"),
                            _eager("resnet_fpn", weights("resnet_fpn"))(image, "RGB"))
    with pytest.raises(ValueError, match="torchscript export, not onnx"):
        OnnxPredictor(str(out))

    # predict.py --exported writes the eager predict.py's predictions.json.
    from fpn_plugin.inference.predict_cli import main as predict_main

    Image.fromarray(_image(TEST_HW, seed=2)).save(tmp_path / "test.png")
    common = ["--input", str(tmp_path / "test.png"), "--score-threshold", "0", "--no-vis"]
    assert predict_main(["--exported", str(out), "--output", str(tmp_path / "p_ts")] + common) == 0
    assert predict_main(["--config-file", "configs/fpn_r18.yaml", "--weights", weights("resnet_fpn"),
                         "--device", "cpu", "--output", str(tmp_path / "p_eager")] + common + SMALL) == 0
    exported, eager = (json.loads((tmp_path / p / "predictions.json").read_text()) for p in ("p_ts", "p_eager"))
    assert len(exported) == len(eager) > 0
    for a, b in zip(exported, eager):
        assert a["category_id"] == b["category_id"] and a["file_name"] == b["file_name"]
        assert np.allclose(a["bbox"], b["bbox"], atol=BOX_ATOL) and abs(a["score"] - b["score"]) <= SCORE_ATOL
    assert predict_main(["--exported", str(out), "--fast-cpu", "--output", str(tmp_path / "p")] + common) == 2
    assert "--fast-cpu cannot apply" in capsys.readouterr().err


@pytest.mark.slow
def test_an_export_that_differs_from_eager_is_removed(weights, monkeypatch, tmp_path):
    real = exporter.exported_runner

    def off_by_a_little(fmt, path):
        run = real(fmt, path)
        return lambda image: tuple(x + 1e-3 if x.is_floating_point() else x for x in run(image))

    monkeypatch.setattr(exporter, "exported_runner", off_by_a_little)
    out = tmp_path / "ts"
    with pytest.raises(ExportError, match="differ from the eager model"):
        export_model("configs/fpn_r18.yaml", weights("resnet_fpn"), "torchscript", str(out), opts=SMALL)
    assert not (out / "model.ts").exists() and not (out / "export.json").exists()


@pytest.mark.slow
def test_nms_keeps_classes_the_trace_did_not_see():
    """detectron2 0.6's batched_nms over >= 40000 boxes loops over the classes present; traced
    without the export's NMS, a class absent from the sample lost all its boxes."""
    from detectron2.modeling.roi_heads import fast_rcnn

    def nms(boxes, scores, classes):
        return fast_rcnn.batched_nms(boxes, scores, classes, 0.5)

    n = 40000
    generator = torch.Generator().manual_seed(0)
    # Whole-pixel boxes (the coordinate trick's class offsets are then exact), crowded so that
    # NMS keeps few and runs fast, and distinct scores, so that the order is unambiguous.
    corners = torch.randint(0, 60, (n, 2), generator=generator).float()
    boxes = torch.cat([corners, corners + 5], dim=1)
    scores = torch.randperm(n, generator=generator).float() / n
    with tracing.traceable_nms(), tracing._quiet():
        traced = torch.jit.trace(nms, (boxes, scores, torch.zeros(n, dtype=torch.long)))
    other_classes = torch.arange(n) % 3
    kept = traced(boxes, scores, other_classes)
    assert set(other_classes[kept].tolist()) == {0, 1, 2}
    assert torch.equal(kept, nms(boxes, scores, other_classes))


def test_unknown_format_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--config-file", "configs/fpn_r18.yaml", "--weights", "w.pth", "--format", "tflite",
              "--output", "out"])
    assert e.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown format 'tflite'.*torchscript, onnx"):
        export_model("configs/fpn_r18.yaml", "w.pth", "tflite", "out")


def _refused(tmp_path, capsys, config_file, fmt, weights_file=None) -> str:
    """Run the CLI expecting a refusal: exit 1, no traceback, no output folder; its stderr."""
    if weights_file is None:
        weights_file = tmp_path / "w.pth"
        weights_file.write_bytes(b"")
    out = tmp_path / "out"
    assert main(["--config-file", config_file, "--weights", str(weights_file), "--format", fmt,
                 "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and not out.exists()
    return err


def test_onnx_without_the_onnx_package_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    err = _refused(tmp_path, capsys, "configs/fpn_r18.yaml", "onnx")
    assert "--format onnx needs the onnx package: pip install 'fpn-plugin[export]'" in err


def test_missing_weights_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    err = _refused(tmp_path, capsys, "configs/fpn_r18.yaml", "torchscript", missing)
    assert f"{missing}: no such file" in err


def test_the_in_model_torchvision_resize_is_refused_with_the_override_that_exports(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "configs/tv_fasterrcnn_r50_fpn.yaml", "torchscript")
    assert "resizes inside the model" in err
    assert "MODEL.META_ARCHITECTURE GeneralizedRCNN INPUT.MIN_SIZE_TEST 800 INPUT.MAX_SIZE_TEST 1333" in err
