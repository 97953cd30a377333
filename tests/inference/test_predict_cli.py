"""predict.py on a folder of mixed, partly broken inputs."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fpn_plugin.inference.predict_cli import main

from .conftest import CLASS_NAMES

ROOT = Path(__file__).resolve().parents[2]


def _picture(h, w, seed):
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 200, np.uint8)
    y, x = rng.integers(10, h // 2), rng.integers(10, w // 2)
    image[y : y + h // 3, x : x + w // 3] = rng.integers(0, 255, 3)
    return image


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_picture(90, 120, 0)).save(folder / "a_photo.jpg")
    Image.fromarray(_picture(100, 80, 1)).save(folder / "b_drawing.png")
    Image.fromarray(_picture(70, 110, 2)[:, :, 0]).save(folder / "c_gray.png")
    Image.fromarray(_picture(80, 80, 3)).convert("RGBA").save(folder / "d_rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    Image.fromarray(_picture(60, 100, 4)).save(folder / "e_phone.jpg", exif=exif)
    (folder / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def _config_file(cfg, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(cfg.dump())
    return path


def test_mixed_folder_writes_one_visualisation_per_good_image_and_reports_the_corrupt_one(
    tiny_detector, mixed_folder, tmp_path, capsys
):
    cfg, _ = tiny_detector
    # An animated GIF (its first frame is read) and a file that is no image (listed as skipped).
    frames = [Image.fromarray(_picture(64, 96, 10 + i)) for i in range(3)]
    frames[0].save(mixed_folder / "g_animated.gif", save_all=True, append_images=frames[1:])
    (mixed_folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = main(["--config-file", str(_config_file(cfg, tmp_path)), "--input", str(mixed_folder),
                 "--output", str(out), "--score-threshold", "0", "--batch-size", "2"])
    assert code == 1  # one input failed
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "f_corrupt.jpg" in printed and "not a readable image" in printed
    assert "6 images" in printed
    assert f"skipped 1 files that are neither images nor videos: {mixed_folder / 'notes.txt'}" in printed
    written = sorted(p.name for p in (out / "vis").iterdir())
    assert written == ["a_photo.jpg", "b_drawing.jpg", "c_gray.jpg", "d_rgba.jpg", "e_phone.jpg", "g_animated.jpg"]
    # The EXIF-rotated photo is drawn upright: 100 wide x 60 high stored, shown 60 x 100.
    assert cv2.imread(str(out / "vis" / "e_phone.jpg")).shape[:2] == (100, 60)

    results = json.loads((out / "predictions.json").read_text())
    good = {"a_photo.jpg", "b_drawing.png", "c_gray.png", "d_rgba.png", "e_phone.jpg", "g_animated.gif"}
    assert {r["file_name"] for r in results} == good
    assert {r["category_name"] for r in results} <= set(CLASS_NAMES)


def test_predictions_load_in_pycocotools_against_a_matching_ground_truth(
    tiny_detector, mixed_folder, tmp_path
):
    cfg, _ = tiny_detector
    (mixed_folder / "f_corrupt.jpg").unlink()
    names = sorted(p.name for p in mixed_folder.iterdir())
    gt = {
        "images": [{"id": 10 + i, "file_name": n, "height": 100, "width": 100} for i, n in enumerate(names)],
        "categories": [{"id": 7 + i, "name": n} for i, n in enumerate(CLASS_NAMES)],
        "annotations": [
            {"id": 1 + i, "image_id": 10 + i, "category_id": 8, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}
            for i in range(len(names))
        ],
    }
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    out = tmp_path / "out"
    code = main(["--config-file", str(_config_file(cfg, tmp_path)), "--input", str(mixed_folder / "*"),
                 "--output", str(out), "--score-threshold", "0", "--coco-gt", str(gt_path), "--no-vis"])
    assert code == 0
    coco_gt = COCO(str(gt_path))
    coco_dt = coco_gt.loadRes(str(out / "predictions.json"))
    # Ids come from the ground truth, by file name and by class name.
    assert {a["image_id"] for a in coco_dt.anns.values()} == {10, 11, 12, 13, 14}
    assert {a["category_id"] for a in coco_dt.anns.values()} <= {7, 8, 9}
    evaluation = COCOeval(coco_gt, coco_dt, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert 0.0 <= evaluation.stats[0] <= 1.0


def test_class_filter_threshold_and_max_detections(tiny_detector, mixed_folder, tmp_path):
    cfg, _ = tiny_detector
    (mixed_folder / "f_corrupt.jpg").unlink()
    config = str(_config_file(cfg, tmp_path))

    def run(*extra):
        out = tmp_path / f"out{len(extra)}"
        code = main(["--config-file", config, "--input", str(mixed_folder), "--output", str(out),
                     "--no-vis", *extra])
        assert code == 0
        return json.loads((out / "predictions.json").read_text())

    everything = run("--score-threshold", "0", "--max-detections", "1000")
    names = [r["category_name"] for r in everything]
    common = max(set(names), key=names.count)
    only = run("--score-threshold", "0", "--max-detections", "1000", "--classes", common)
    assert len(only) == names.count(common) and {r["category_name"] for r in only} == {common}

    top3 = run("--score-threshold", "0", "--max-detections", "3")
    for file_name in {r["file_name"] for r in everything}:
        scores = sorted((r["score"] for r in everything if r["file_name"] == file_name), reverse=True)
        kept = sorted((r["score"] for r in top3 if r["file_name"] == file_name), reverse=True)
        assert kept == scores[:3]

    # Halfway between two scores, so that the rounding in the JSON cannot matter.
    scores = sorted({r["score"] for r in everything})
    threshold = (scores[len(scores) // 2] + scores[len(scores) // 2 + 1]) / 2
    above = run("--score-threshold", str(threshold), "--max-detections", "1000")
    assert len(above) == sum(r["score"] >= threshold for r in everything)


def test_unknown_class_and_missing_input_are_explained(tiny_detector, tmp_path, capsys):
    cfg, _ = tiny_detector
    config = str(_config_file(cfg, tmp_path))
    assert main(["--config-file", config, "--input", str(tmp_path), "--classes", "zebra"]) == 2
    assert "unknown class name(s) ['zebra']" in capsys.readouterr().err
    code = main(["--config-file", config, "--input", str(tmp_path / "nothing_here"), "--output", str(tmp_path / "o")])
    assert code == 1
    assert "no such file or folder" in capsys.readouterr().out


def test_video_in_annotated_video_out(tiny_detector, tmp_path, capsys):
    cfg, _ = tiny_detector
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for i in range(3):
        writer.write(_picture(64, 96, i))
    writer.release()
    out = tmp_path / "out"
    code = main(["--config-file", str(_config_file(cfg, tmp_path)), "--input", str(video),
                 "--output", str(out), "--score-threshold", "0"])
    assert code == 0
    assert f"visualisations: {out / 'vis'}" in capsys.readouterr().out
    assert [p.name for p in out.iterdir() if p.suffix == ".mp4"] == []  # where the line says
    capture = cv2.VideoCapture(str(out / "vis" / "clip_pred.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    results = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in results} <= {"clip.avi#000000", "clip.avi#000001", "clip.avi#000002"}


def test_predict_py_runs_as_a_script(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--score-threshold" in out.stdout


def test_top_k_proposals_are_drawn_per_image(tiny_detector, mixed_folder, tmp_path):
    cfg, _ = tiny_detector
    (mixed_folder / "f_corrupt.jpg").unlink()
    out = tmp_path / "out"
    code = main(["--config-file", str(_config_file(cfg, tmp_path)), "--input", str(mixed_folder / "a_photo.jpg"),
                 str(mixed_folder / "e_phone.jpg"), "--output", str(out), "--proposals", "5", "--no-vis"])
    assert code == 0
    assert sorted(p.name for p in (out / "proposals").iterdir()) == ["a_photo.jpg", "e_phone.jpg"]
    assert cv2.imread(str(out / "proposals" / "e_phone.jpg")).shape[:2] == (100, 60)


def test_the_class_count_and_names_come_from_the_checkpoint(tiny_detector, tmp_path, capsys):
    # The config says 80 classes (detectron2's default) and registers no dataset; the
    # checkpoint was trained for 3 named classes: those are what predict.py must use.
    cfg, weights = tiny_detector
    cfg = cfg.clone()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _picture(90, 120, 0))
    out = tmp_path / "out"
    code = main(["--config-file", str(_config_file(cfg, tmp_path)), "--weights", str(weights),
                 "--input", str(folder), "--output", str(out), "--no-vis", "--score-threshold", "0"])
    assert code == 0
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category_name"] for r in results} <= set(CLASS_NAMES)


def test_a_checkpoint_whose_box_predictor_does_not_fit_is_refused(tiny_detector, tmp_path, capsys):
    import torch

    # A detectron2 model-zoo style file: weights only, no class names, 3 classes.
    cfg, weights = tiny_detector
    bare = tmp_path / "no_names.pth"
    torch.save({"model": torch.load(weights, weights_only=True)["model"]}, bare)
    cfg = cfg.clone()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _picture(90, 120, 0))
    code = main(["--config-file", str(_config_file(cfg, tmp_path)), "--weights", str(bare),
                 "--input", str(folder), "--output", str(tmp_path / "out"), "--score-threshold", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "has a box predictor for 3 classes, but MODEL.ROI_HEADS.NUM_CLASSES is 1" in err
    assert "Set MODEL.ROI_HEADS.NUM_CLASSES 3" in err
    assert not (tmp_path / "out" / "predictions.json").exists()
