"""``TorchvisionGeneralizedRCNN``: detectron2's ``GeneralizedRCNN`` resizing as torchvision does.

torchvision's detectors resize inside the model (``GeneralizedRCNNTransform``): the float image
is scaled by ``min(min_size / short side, max_size / long side)`` with ``F.interpolate``
(bilinear, no antialiasing, output size floored). detectron2 resizes in the data loader
(``ResizeShortestEdge``: PIL on uint8, antialiased, size rounded), so on any image whose size is
not already the test size the two models see different pixels and a torchvision detector's
detections move. This meta-architecture gives an imported torchvision detector the pixels it was
trained on at inference, through every detectron2 entry point (``DefaultPredictor``, the test
loader, the project's ``Predictor``), because they all leave the image as it is when
``INPUT.MIN_SIZE_TEST`` is 0. Training keeps detectron2's data-loader resize.
"""
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform

__all__ = ["TorchvisionGeneralizedRCNN"]


def _check_no_loader_resize(min_size_test: int) -> None:
    if min_size_test != 0:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE TorchvisionGeneralizedRCNN resizes test images itself "
            f"(INPUT.TORCHVISION_RESIZE), but INPUT.MIN_SIZE_TEST is {min_size_test}, so the data "
            "loader would resize them first and the image would be resized twice. Set "
            "INPUT.MIN_SIZE_TEST 0 (as configs/tv_fasterrcnn_r50_fpn.yaml does) and the test "
            "size in INPUT.TORCHVISION_RESIZE.MIN_SIZE / MAX_SIZE."
        )


@META_ARCH_REGISTRY.register()
class TorchvisionGeneralizedRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` that, at inference, resizes each image with torchvision's rule.

    Detections are returned at the size of the image given (or its ``height``/``width``), as
    from ``GeneralizedRCNN``.
    """

    @configurable
    def __init__(self, *, resize_min_size: int, resize_max_size: int, **kwargs):
        """
        Args:
            resize_min_size, resize_max_size: torchvision's ``min_size`` and ``max_size``.
            kwargs: as ``GeneralizedRCNN``.
        """
        super().__init__(**kwargs)
        # Only its resize() is used; the pixel normalisation stays the model's own.
        self.torchvision_transform = GeneralizedRCNNTransform(resize_min_size, resize_max_size, [0.0] * 3, [1.0] * 3)

    @classmethod
    def from_config(cls, cfg):
        _check_no_loader_resize(cfg.INPUT.MIN_SIZE_TEST)
        ret = super().from_config(cfg)
        ret.update(resize_min_size=cfg.INPUT.TORCHVISION_RESIZE.MIN_SIZE,
                   resize_max_size=cfg.INPUT.TORCHVISION_RESIZE.MAX_SIZE)
        return ret

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        resized, _ = self.torchvision_transform.resize(image.to(self.device, torch.float32), None)
        return resized

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if not self.training:
            batched_inputs = [dict(x, image=self._resize(x["image"])) for x in batched_inputs]
        return super().preprocess_image(batched_inputs)

    def inference(self, batched_inputs, detected_instances=None, do_postprocess: bool = True):
        # Detections at the given image's size when no height/width is given (GeneralizedRCNN
        # would use the resized size, which here is not the input's).
        batched_inputs = [dict(x, height=x.get("height", x["image"].shape[-2]),
                               width=x.get("width", x["image"].shape[-1])) for x in batched_inputs]
        return super().inference(batched_inputs, detected_instances, do_postprocess)
