"""The VOC evaluator against an independent devkit computation and detectron2's evaluator."""
import json
import logging
import os
import uuid

import numpy as np
import pytest
import torch

import fpn_plugin  # noqa: F401  (before detectron2's submodules)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_pascal_voc
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, Instances

from fpn_plugin.evaluation import VOCDetectionEvaluator, build_evaluator
from fpn_plugin.evaluation.voc_metric import evaluate_class

CLASSES = ["cat", "dog", "car"]

# Ground truth in VOC XML terms: 1-based inclusive pixels (xmin, ymin, xmax, ymax).
GT = {
    "img1": [("cat", (10, 10, 60, 50), 0), ("dog", (100, 20, 180, 90), 0),
             ("cat", (70, 70, 110, 120), 1)],
    "img2": [("car", (5, 5, 150, 100), 0), ("car", (160, 10, 200, 60), 0),
             ("dog", (20, 110, 60, 150), 1), ("cat", (120, 100, 190, 150), 0)],
    "img3": [("dog", (30, 30, 90, 100), 0), ("car", (100, 100, 140, 130), 1),
             ("cat", (150, 20, 195, 70), 0)],
    "img4": [],  # an image without objects: any detection on it is a false positive
}

# Detections in detectron2's continuous coordinates (what a model outputs): class, score, box.
# Boxes have one decimal and scores three, which detectron2's evaluator writes without loss.
DETS = {
    "img1": [("cat", 0.950, (9.0, 9.0, 61.0, 49.0)),  # TP
             ("cat", 0.900, (9.5, 10.0, 60.0, 52.0)),  # duplicate -> FP
             ("cat", 0.600, (69.0, 69.0, 110.0, 121.0)),  # on a difficult cat -> ignored
             ("dog", 0.850, (99.0, 19.0, 178.0, 92.0)),  # TP
             ("car", 0.300, (0.0, 0.0, 40.0, 40.0))],  # FP
    "img2": [("car", 0.880, (4.0, 4.0, 150.0, 100.0)),  # TP
             ("car", 0.420, (170.0, 30.0, 230.0, 90.0)),  # low IoU -> FP
             ("dog", 0.700, (19.0, 109.0, 60.0, 150.0)),  # difficult dog -> ignored
             ("cat", 0.250, (119.0, 99.0, 150.0, 150.0)),  # IoU < 0.5 -> FP
             ("cat", 0.150, (118.0, 98.0, 190.0, 152.0))],  # TP, low score
    "img3": [("dog", 0.777, (29.0, 29.0, 95.0, 100.0)),  # TP
             ("dog", 0.555, (140.0, 10.0, 199.0, 80.0)),  # FP
             ("car", 0.666, (99.0, 99.0, 140.0, 130.0)),  # difficult car -> ignored
             ("cat", 0.333, (149.0, 19.0, 190.0, 71.0))],  # TP
    "img4": [("dog", 0.990, (10.0, 10.0, 50.0, 50.0)),  # FP with the top score
             ("car", 0.123, (20.0, 20.0, 80.0, 80.0))],  # FP
}


def _write_vocdevkit(root):
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for image_id, objects in GT.items():
        objs = "".join(
            f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in objects
        )
        with open(os.path.join(root, "Annotations", image_id + ".xml"), "w") as f:
            f.write(f"<annotation><filename>{image_id}.jpg</filename><size><width>200</width>"
                    f"<height>160</height><depth>3</depth></size>{objs}</annotation>")
    with open(os.path.join(root, "ImageSets", "Main", "test.txt"), "w") as f:
        f.write("\n".join(GT) + "\n")


def _devkit_ap(classname, ovthresh, use_07):
    """An independent transcription of the MATLAB devkit (VOCevaldet.m and VOCap.m).

    It works in the devkit's own terms: raw 1-based XML coordinates, detections shifted back
    by +1 on xmin/ymin as written to the results files, pixel widths with +1.
    """
    gt = {i: [(b, d) for n, b, d in objs if n == classname] for i, objs in GT.items()}
    used = {i: [False] * len(v) for i, v in gt.items()}
    npos = sum(1 for v in gt.values() for _, d in v if not d)
    dets = [(i, s, (b[0] + 1, b[1] + 1, b[2], b[3]))
            for i, v in DETS.items() for n, s, b in v if n == classname]
    dets.sort(key=lambda x: -x[1])
    tp, fp = [], []
    for image_id, _, bb in dets:
        ovmax, jmax = -1.0, -1
        for j, (bbgt, _) in enumerate(gt[image_id]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                      + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= ovthresh:
            if gt[image_id][jmax][1]:
                tp.append(0), fp.append(0)  # difficult: ignored
            elif not used[image_id][jmax]:
                used[image_id][jmax] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / (fp + tp)  # the devkit divides as is; NaN where a difficult match comes first
    if use_07:
        ap = 0.0
        for t in np.arange(0, 1.1, 0.1):
            p = prec[rec >= t]
            ap += (np.nanmax(p) if p.size else 0.0) / 11
        return ap
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *np.nan_to_num(prec), 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def _outputs():
    inputs, outputs = [], []
    for image_id, dets in DETS.items():
        inst = Instances((160, 200))
        inst.pred_boxes = Boxes(torch.tensor([b for _, _, b in dets], dtype=torch.float32))
        inst.scores = torch.tensor([s for _, s, _ in dets], dtype=torch.float32)
        inst.pred_classes = torch.tensor([CLASSES.index(n) for n, _, _ in dets])
        inputs.append({"image_id": image_id})
        outputs.append({"instances": inst})
    return inputs, outputs


@pytest.fixture(scope="module")
def voc_datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc") / "VOC2007")
    _write_vocdevkit(root)
    names = {}
    for year in (2007, 2012):
        name = f"test_voc_eval_{year}_{uuid.uuid4().hex[:6]}"
        register_pascal_voc(name, root, "test", year, CLASSES)
        MetadataCatalog.get(name).evaluator_type = "pascal_voc"
        names[year] = name
    yield names
    for name in names.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _run(evaluator):
    evaluator.reset()
    evaluator.process(*_outputs())
    return evaluator.evaluate()["bbox"]


def test_agrees_with_independent_devkit(voc_datasets, tmp_path):
    res = _run(VOCDetectionEvaluator(voc_datasets[2007], str(tmp_path), distributed=False))
    ap07 = [100 * _devkit_ap(c, 0.5, True) for c in CLASSES]
    area = [100 * _devkit_ap(c, 0.5, False) for c in CLASSES]
    for c, a07, aa in zip(CLASSES, ap07, area):
        assert res[f"AP50_07-{c}"] == pytest.approx(a07, abs=1e-9)
        assert res[f"AP50_area-{c}"] == pytest.approx(aa, abs=1e-9)
    assert res["AP50_07"] == pytest.approx(np.mean(ap07), abs=1e-9)
    assert res["AP50_area"] == pytest.approx(np.mean(area), abs=1e-9)
    # The two metrics really differ on these detections, so the test tells them apart.
    assert abs(res["AP50_07"] - res["AP50_area"]) > 1.0
    # 2007 data: AP50 is the 11-point metric, as in detectron2 and the papers.
    assert res["AP50"] == res["AP50_07"]
    table = (tmp_path / "voc_per_class_ap.csv").read_text().splitlines()
    assert table[0].startswith("class,AP50 (VOC07 11-point),AP50 (area, VOC2010+)") or \
        table[0].startswith('class,AP50 (VOC07 11-point),"AP50 (area, VOC2010+)"')
    assert [line.split(",")[0] for line in table[1:]] == CLASSES + ["mean"]
    assert (tmp_path / "voc_per_class_ap.md").read_text().count("\n|") >= 5
    saved = json.loads((tmp_path / "results.json").read_text())["bbox"]
    assert saved["AP50_07"] == pytest.approx(res["AP50_07"]) and saved["AP"] == pytest.approx(res["AP"])


@pytest.mark.parametrize("year", [2007, 2012])
def test_agrees_with_detectron2(voc_datasets, year):
    ours = _run(VOCDetectionEvaluator(voc_datasets[year], distributed=False))
    theirs = _run(PascalVOCDetectionEvaluator(voc_datasets[year]))
    for key in ("AP50", "AP75", "AP"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    assert ours["AP50_07" if year == 2007 else "AP50_area"] == pytest.approx(theirs["AP50"])


def test_exact_values_with_a_difficult_match():
    # GT: A and B count, D is difficult. Ranked: A (TP), D (ignored), FP, B (TP).
    gt = {"i": (np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float),
                np.array([False, False, True]))}
    dets = [("i", 0.9, [0, 0, 10, 10]), ("i", 0.8, [40, 0, 50, 10]),
            ("i", 0.7, [60, 0, 70, 10]), ("i", 0.6, [20, 0, 30, 10])]
    r = evaluate_class(gt, dets, 0.5)
    assert (r.num_gt, r.num_difficult, r.num_dets, r.num_tp) == (2, 1, 4, 2)
    assert r.ap_area == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert r.ap_07 == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_no_predictions_is_explained(voc_datasets, caplog):
    ev = build_evaluator(None, voc_datasets[2012])
    assert isinstance(ev, VOCDetectionEvaluator)
    ev._distributed = False
    ev.reset()
    empty = Instances((160, 200), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                      pred_classes=torch.zeros(0, dtype=torch.long))
    ev.process([{"image_id": i} for i in GT], [{"instances": empty} for _ in GT])
    with caplog.at_level(logging.INFO, logger="fpn_plugin"):
        res = ev.evaluate()["bbox"]
    assert res["AP50_07"] == 0 and res["AP50_area"] == 0
    assert "no predictions on the 4 images" in caplog.text
    assert "SCORE_THRESH_TEST" in caplog.text


def test_flat_folder_dataset_gives_the_same_numbers(voc_datasets, tmp_path):
    # The same XMLs as a flat voc_folder dataset: ground truth comes from its dataset dicts
    # (with the difficult flags) instead of the VOCdevkit folder.
    from fpn_plugin.data import register_custom_dataset

    root = MetadataCatalog.get(voc_datasets[2012]).dirname
    name = f"test_voc_flat_{uuid.uuid4().hex[:6]}"
    register_custom_dataset(name, {"FORMAT": "voc_folder", "ANNOTATIONS": os.path.join(root, "Annotations"),
                                   "IMAGES": os.path.join(root, "JPEGImages"), "CLASSES": CLASSES})
    try:
        assert not MetadataCatalog.get(name).get("dirname")
        flat = _run(VOCDetectionEvaluator(name, distributed=False))
        devkit = _run(VOCDetectionEvaluator(voc_datasets[2012], distributed=False))
        assert flat == pytest.approx(devkit)
        assert flat["AP50"] == flat["AP50_area"]  # no YEAR: the area metric
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_progress_over_the_classes_is_shown_on_stderr(voc_datasets, capsys):
    _run(VOCDetectionEvaluator(voc_datasets[2007], distributed=False))
    err = capsys.readouterr().err
    assert f"VOC AP on {voc_datasets[2007]}" in err
    assert f"{len(CLASSES)}/{len(CLASSES)}" in err and "class" in err
