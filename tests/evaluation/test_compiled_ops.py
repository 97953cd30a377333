"""detectron2's compiled ops where they change what the plugin runs: the fast COCO evaluator
(``COCOeval_opt``) and rotated NMS. With the ops (a source build) the plugin must use them and
get what the Python path gets; without them (the PyPI route) the fast-path checks are skipped.
"""
import uuid

import numpy as np
import pytest
import torch

import fpn_plugin  # noqa: F401  (before detectron2's submodules)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from fpn_plugin.compat import has_compiled_ops
from fpn_plugin.evaluation import COCODetectionEvaluator

needs_ops = pytest.mark.skipif(
    not has_compiled_ops(), reason="detectron2 has no compiled ops here (the PyPI route)"
)

CLASSES = ["a", "b", "c"]


def _dataset():
    # Boxes of COCO's three size ranges, three classes, 12 images; fixed by the seed.
    rng = np.random.RandomState(0)
    dicts = []
    for i in range(12):
        anns = []
        for _ in range(rng.randint(1, 6)):
            w, h = rng.choice([12, 20, 50, 70, 110]), rng.choice([14, 25, 60, 100])
            x, y = rng.randint(0, 320 - w), rng.randint(0, 240 - h)
            anns.append({"bbox": [float(x), float(y), float(w), float(h)], "bbox_mode": BoxMode.XYWH_ABS,
                         "category_id": int(rng.randint(len(CLASSES))), "iscrowd": 0})
        dicts.append({"file_name": f"img{i}.jpg", "image_id": i, "height": 240, "width": 320,
                      "annotations": anns})
    return dicts


def _predictions():
    """Imperfect detections: jittered boxes, some with the wrong class, some missed, extras."""
    rng = np.random.RandomState(1)
    out = []
    for d in _dataset():
        boxes, scores, classes = [], [], []
        for a in d["annotations"]:
            if rng.rand() < 0.15:
                continue  # missed
            x0, y0, x1, y1 = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            scale = max(x1 - x0, y1 - y0)
            boxes.append([c + rng.normal(0, 0.08 * scale) for c in (x0, y0, x1, y1)])
            scores.append(rng.uniform(0.3, 1.0))
            classes.append(a["category_id"] if rng.rand() > 0.1 else int(rng.randint(len(CLASSES))))
        for _ in range(rng.randint(0, 3)):  # false positives
            x, y = rng.uniform(0, 250), rng.uniform(0, 180)
            boxes.append([x, y, x + rng.uniform(10, 70), y + rng.uniform(10, 60)])
            scores.append(rng.uniform(0.05, 0.8))
            classes.append(int(rng.randint(len(CLASSES))))
        inst = Instances((d["height"], d["width"]), pred_boxes=Boxes(torch.tensor(boxes).reshape(-1, 4)),
                         scores=torch.tensor(scores), pred_classes=torch.tensor(classes, dtype=torch.int64))
        out.append(({"image_id": d["image_id"]}, {"instances": inst}))
    return out


@pytest.fixture()
def dataset():
    name = f"test_compiled_ops_{uuid.uuid4().hex[:6]}"
    DatasetCatalog.register(name, _dataset)
    MetadataCatalog.get(name).set(thing_classes=CLASSES, evaluator_type="coco")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.fixture()
def cocoeval_calls(monkeypatch):
    """The COCOeval classes detectron2's COCOEvaluator instantiates, recorded."""
    from detectron2.evaluation import coco_evaluation

    calls = []

    def spy(cls, label):
        class Spy(cls):
            def __init__(self, *args, **kwargs):
                calls.append(label)
                super().__init__(*args, **kwargs)

        return Spy

    monkeypatch.setattr(coco_evaluation, "COCOeval_opt", spy(coco_evaluation.COCOeval_opt, "fast"))
    monkeypatch.setattr(coco_evaluation, "COCOeval", spy(coco_evaluation.COCOeval, "pycocotools"))
    return calls


def _evaluate(name, out_dir, **kwargs):
    ev = COCODetectionEvaluator(name, output_dir=str(out_dir), distributed=False, **kwargs)
    ev.reset()
    for inp, out in _predictions():
        ev.process([inp], [out])
    return ev.evaluate()["bbox"]


def test_the_evaluator_uses_the_fast_impl_exactly_when_detectron2_has_the_op(dataset, tmp_path, cocoeval_calls):
    res = _evaluate(dataset, tmp_path)
    assert cocoeval_calls == ["fast" if has_compiled_ops() else "pycocotools"]
    assert 20 < res["AP"] < 90  # imperfect predictions: neither 0 nor 100


@needs_ops
def test_fast_and_pycocotools_give_the_same_ap(dataset, tmp_path, cocoeval_calls):
    fast = _evaluate(dataset, tmp_path / "fast", use_fast_impl=True)
    python = _evaluate(dataset, tmp_path / "python", use_fast_impl=False)
    assert cocoeval_calls == ["fast", "pycocotools"]
    assert set(fast) == set(python)
    for key in python:
        if np.isnan(python[key]):
            assert np.isnan(fast[key]), key
        else:
            assert fast[key] == pytest.approx(python[key], abs=1e-9), key
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-a", "AP50-a"} <= set(python)


@pytest.mark.skipif(has_compiled_ops(), reason="detectron2 has its compiled ops here")
def test_asking_for_the_fast_impl_without_the_op_says_why(dataset, tmp_path):
    with pytest.raises(ValueError, match="compiled ops"):
        COCODetectionEvaluator(dataset, output_dir=str(tmp_path), distributed=False, use_fast_impl=True)


def _rotated_boxes(n, seed):
    """(cx, cy, w, h, angle) boxes at 0 or 90 degrees, clustered so that many overlap."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g) * 30 + 30
    sizes = torch.rand(n, 2, generator=g) * 30 + 15
    angles = torch.randint(0, 2, (n,), generator=g).float() * 90
    return torch.cat([centers, sizes, angles[:, None]], dim=1), torch.rand(n, generator=g)


def _axis_aligned(rotated):
    # At 90 degrees a box's width and height swap.
    cx, cy, w, h, a = rotated.unbind(1)
    w, h = torch.where(a == 90, h, w), torch.where(a == 90, w, h)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


@needs_ops
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotated_nms_is_the_compiled_op_and_agrees_with_axis_aligned_nms(seed):
    from detectron2.layers import batched_nms_rotated, nms_rotated
    from torchvision.ops import batched_nms, nms

    from fpn_plugin import compat

    # The real op answers, not the stand-in compat registers when the ops are missing.
    assert compat._torch_library is None
    boxes, scores = _rotated_boxes(40, seed)
    aligned = _axis_aligned(boxes)
    for threshold in (0.3, 0.5, 0.7):
        keep = nms_rotated(boxes, scores, threshold)
        expected = nms(aligned, scores, threshold)
        assert 0 < len(expected) < len(boxes)
        assert keep.tolist() == expected.tolist(), threshold
    classes = torch.arange(len(boxes)) % 3
    keep = batched_nms_rotated(boxes, scores, classes, 0.5)
    assert sorted(keep.tolist()) == sorted(batched_nms(aligned, scores, classes, 0.5).tolist())


@pytest.mark.parametrize("ops", [False, True])
def test_the_evaluator_choice_follows_the_compiled_ops_check(dataset, tmp_path, monkeypatch, ops):
    # Both branches on every host, by simulating the one check (fpn_plugin.compat.has_compiled_ops).
    from fpn_plugin.evaluation import coco

    monkeypatch.setattr(coco, "has_compiled_ops", lambda: ops)
    ev = COCODetectionEvaluator(dataset, output_dir=str(tmp_path), distributed=False)
    assert ev._use_fast_impl is ops
    if not ops:
        with pytest.raises(ValueError, match="compiled ops"):
            COCODetectionEvaluator(dataset, output_dir=str(tmp_path), distributed=False, use_fast_impl=True)
