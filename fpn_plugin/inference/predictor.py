"""``Predictor``: what detectron2's ``DefaultPredictor`` does, for batches and any image input."""
import logging
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T

from ..checkpoint import load_inference_model
from ..data.register import config_class_names
from ..device import resolve_device
from ..precision import choose_precision
from .images import load_image

__all__ = ["Predictor"]

logger = logging.getLogger(__name__)

# Autocast dtypes: bf16 is the CPU's reduced precision (fp16 on CPU is slow); fp16 is CUDA's.
_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _to_float32(instances):
    for name, value in instances.get_fields().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            instances.set(name, value.float())
        elif hasattr(value, "tensor") and value.tensor.is_floating_point():
            value.tensor = value.tensor.float()
    return instances


class Predictor:
    """Run a detector on images: paths, PIL images or arrays, one at a time or in batches.

    Compared with ``DefaultPredictor``: ``MODEL.DEVICE: auto`` works; inputs are converted by
    :func:`~fpn_plugin.inference.images.load_image` (EXIF orientation, grayscale, RGBA, 16-bit,
    an explicit channel order for arrays); a list of images runs in batches of ``batch_size``
    in one forward each; weights load through :class:`PluginCheckpointer` (every format it
    knows, and every weight of the model from the file), and the class count and names come
    from the checkpoint when the trainer wrote them there.
    ``fast_cpu=True`` runs the model in the CPU fast form of
    :func:`~fpn_plugin.inference.fast_cpu.optimize_for_cpu` (same detections up to fp32
    rounding; with precision "bf16" its backbone and heads in bf16; with ``int8_rpn_images``
    the RPN head's conv in int8, calibrated on those images).

    Attributes:
        class_names (list[str] or None): names of the model's contiguous class ids.
    """

    def __init__(self, cfg, batch_size: int = 1, precision: str = "fp32", fast_cpu: bool = False,
                 int8_rpn_images: Optional[Sequence] = None):
        """
        Args:
            cfg: a config with the fpn_plugin keys.
            batch_size: images per forward pass.
            precision: "fp32" (default: the evaluator's detections), "auto", "bf16" or "fp16"
                (see :func:`fpn_plugin.precision.choose_precision`).
            fast_cpu: run the CPU fast form of the model.
            int8_rpn_images: with ``fast_cpu``, a few images like the ones to predict (paths or
                PIL images) that calibrate the RPN head's conv in int8; None keeps it in the
                fast path's precision. Changes the detections a little (README, "CPU fast
                path").
        """
        self.cfg = cfg.clone()  # the model may modify it
        self.cfg.defrost()
        self.cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)
        # "auto", "fp32", "fp16" or "bf16", resolved by the project's one policy.
        self.precision = choose_precision(precision, self.cfg.MODEL.DEVICE, setting="Predictor precision").name
        if not self.cfg.MODEL.WEIGHTS:
            raise ValueError(
                "MODEL.WEIGHTS is empty: prediction needs trained weights (predict.py --weights, "
                "or MODEL.WEIGHTS in the config); a model without them is random."
            )
        # The checkpoint's class count and names; every weight from the file, FORMAT_CHECK.
        self.model, self.class_names = load_inference_model(self.cfg, config_class_names(cfg))
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR' for prediction, got {cfg.INPUT.FORMAT!r}")
        self.input_format = cfg.INPUT.FORMAT
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.fast_cpu = fast_cpu
        if int8_rpn_images is not None and not fast_cpu:
            raise ValueError("int8_rpn_images is a step of the CPU fast path: give fast_cpu=True too")
        if fast_cpu:
            self._make_fast(int8_rpn_images)

    def _make_fast(self, int8_rpn_images: Optional[Sequence] = None) -> None:
        # The CPU fast path (inference/fast_cpu/): norms folded, NHWC; with precision "bf16" its
        # backbone and the heads' heavy parts under bf16.
        from .fast_cpu import optimize_for_cpu

        if torch.device(self.cfg.MODEL.DEVICE).type != "cpu":
            raise ValueError(f"fast_cpu is for MODEL.DEVICE cpu, got {self.cfg.MODEL.DEVICE!r}: drop fast_cpu on a GPU")
        calibration = None
        if int8_rpn_images is not None:  # resized as the images to predict will be
            calibration = [self.model_input(load_image(x)) for x in int8_rpn_images]
        self.model = optimize_for_cpu(
            self.model, bf16=self.precision == "bf16", int8_rpn=calibration, inplace=True
        )

    def model_input(self, rgb: np.ndarray) -> dict:
        """The model's input dict for an RGB uint8 image: resized, in INPUT.FORMAT, CHW float."""
        image = rgb if self.input_format == "RGB" else rgb[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def predict(self, images: Sequence, channel_order: Optional[str] = None) -> List[dict]:
        """Predict on a list of images, ``batch_size`` at a time.

        Args:
            images: paths, PIL images or arrays (see ``load_image``).
            channel_order: for array inputs, "RGB"/"BGR" (or "RGBA"/"BGRA").

        Returns:
            list[dict]: one ``{"instances": Instances}`` per image, on the CPU, in the
            original image's coordinates.
        """
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = [self.model_input(load_image(x, channel_order)) for x in images[start : start + self.batch_size]]
            for output in self._forward(batch):
                outputs.append({"instances": _to_float32(output["instances"].to("cpu"))})
        return outputs

    def _forward(self, batch: List[dict]) -> List[dict]:
        dtype = _AUTOCAST_DTYPES[self.precision]
        device_type = torch.device(self.cfg.MODEL.DEVICE).type
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            return self.model(batch)

    def __call__(self, image, channel_order: Optional[str] = None) -> dict:
        """Predict on one image; arrays are taken as BGR unless told, like ``DefaultPredictor``."""
        if isinstance(image, np.ndarray) and channel_order is None and image.ndim == 3:
            channel_order = "BGR" if image.shape[2] == 3 else "BGRA"
        return self.predict([image], channel_order)[0]
