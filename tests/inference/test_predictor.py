"""Predictor: DefaultPredictor's results, for batches and explicit channel orders."""
import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor

from fpn_plugin.inference import Predictor

from .conftest import CLASS_NAMES


def _images(count, size=(120, 150)):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def _same(a, b):
    a, b = a["instances"], b["instances"]
    assert len(a) == len(b) > 0
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-3)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-5)
    assert torch.equal(a.pred_classes, b.pred_classes)


def test_a_batch_gives_defaultpredictors_detections_image_by_image(tiny_detector):
    cfg, _ = tiny_detector
    bgr_images = _images(3)
    reference = DefaultPredictor(cfg)
    outputs = Predictor(cfg, batch_size=3).predict(bgr_images, channel_order="BGR")
    assert len(outputs) == 3
    for image, output in zip(bgr_images, outputs):
        _same(output, reference(image))


def test_rgb_passed_as_rgb_equals_bgr_passed_as_bgr(tiny_detector):
    cfg, _ = tiny_detector
    predictor = Predictor(cfg)
    (bgr,) = _images(1)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    _same(predictor.predict([rgb], "RGB")[0], predictor.predict([bgr], "BGR")[0])
    # Called like DefaultPredictor, an array is BGR.
    _same(predictor(bgr), predictor.predict([bgr], "BGR")[0])


def test_class_names_travel_in_the_checkpoint(tiny_detector):
    cfg, _ = tiny_detector
    assert Predictor(cfg).class_names == CLASS_NAMES


def test_batches_of_mixed_sizes_keep_each_images_size(tiny_detector):
    cfg, _ = tiny_detector
    images = _images(1, (120, 150)) + _images(1, (97, 201))
    outputs = Predictor(cfg, batch_size=2).predict(images, "BGR")
    assert [o["instances"].image_size for o in outputs] == [(120, 150), (97, 201)]


def test_bad_batch_size_is_refused(tiny_detector):
    cfg, _ = tiny_detector
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Predictor(cfg, batch_size=0)
