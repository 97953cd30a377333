"""Run an exported detector as ``DefaultPredictor`` runs the eager one: resize, run, rescale."""
import json
import os
from typing import List, Optional, Sequence

import numpy as np
import torch

__all__ = ["TorchScriptPredictor", "OnnxPredictor"]


class _ExportedPredictor:
    """What both runners share: ``export.json``, the resize and detectron2's postprocessing.

    Attributes:
        class_names (list[str] or None): names of the contiguous class ids.
        metadata (dict): the contents of ``export.json``.
    """

    format = None  # "torchscript" or "onnx", the format the folder must hold

    def __init__(self, directory: str):
        """
        Args:
            directory: the ``--output`` folder of ``python -m fpn_plugin.export``.
        """
        from detectron2.data import transforms as T

        with open(os.path.join(directory, "export.json")) as f:
            self.metadata = json.load(f)
        if self.metadata["format"] != self.format:
            raise ValueError(
                f"{directory} holds a {self.metadata['format']} export, not {self.format}: use "
                f"{'OnnxPredictor' if self.metadata['format'] == 'onnx' else 'TorchScriptPredictor'}"
            )
        self.path = os.path.join(directory, self.metadata["file"])
        self.class_names = self.metadata["class_names"]
        self.input_format = self.metadata["input_format"]
        resize = self.metadata["resize"]
        # The augmentation DefaultPredictor (and fpn_plugin's Predictor) builds.
        self.aug = T.ResizeShortestEdge(
            [resize["min_size_test"], resize["min_size_test"]], resize["max_size_test"]
        )
        self._names = self.metadata["outputs"]["names"]

    def model_input(self, rgb: np.ndarray) -> torch.Tensor:
        """The exported model's input for an RGB uint8 image: resized, INPUT.FORMAT, CHW float."""
        image = rgb if self.input_format == "RGB" else rgb[:, :, ::-1]
        resized = self.aug.get_transform(image).apply_image(image)
        return torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))

    def run(self, image: torch.Tensor) -> dict:
        """The file's outputs for one model input, by name (boxes, classes, scores, image_size)."""
        raise NotImplementedError

    def _instances(self, image: torch.Tensor, height: int, width: int):
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import Boxes, Instances

        out = self.run(image)
        instances = Instances(tuple(image.shape[1:]))
        instances.pred_boxes = Boxes(out["boxes"].float())
        instances.scores = out["scores"].float()
        instances.pred_classes = out["classes"].long()
        # Scaled to the original image and clipped, as GeneralizedRCNN does eagerly.
        return detector_postprocess(instances, height, width)

    def predict(self, images: Sequence, channel_order: Optional[str] = None) -> List[dict]:
        """One ``{"instances": Instances}`` per image (paths, PIL images or arrays, as
        :meth:`fpn_plugin.inference.Predictor.predict` takes them), in original coordinates."""
        from ..inference import load_image

        outputs = []
        for x in images:
            rgb = load_image(x, channel_order)
            instances = self._instances(self.model_input(rgb), *rgb.shape[:2])
            outputs.append({"instances": instances})
        return outputs

    def __call__(self, image, channel_order: Optional[str] = None) -> dict:
        """Predict on one image; arrays are taken as BGR unless told, like ``DefaultPredictor``."""
        if isinstance(image, np.ndarray) and channel_order is None and image.ndim == 3:
            channel_order = "BGR" if image.shape[2] == 3 else "BGRA"
        return self.predict([image], channel_order)[0]


class TorchScriptPredictor(_ExportedPredictor):
    """Runs ``model.ts`` of an export folder (``torch.jit.load``, CPU)."""

    format = "torchscript"

    def __init__(self, directory: str):
        super().__init__(directory)
        self.module = torch.jit.load(self.path, map_location="cpu")

    @torch.no_grad()
    def run(self, image: torch.Tensor) -> dict:
        return dict(zip(self._names, self.module(image)))


class OnnxPredictor(_ExportedPredictor):
    """Runs ``model.onnx`` of an export folder with onnxruntime (CPU)."""

    format = "onnx"

    def __init__(self, directory: str):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("OnnxPredictor needs onnxruntime: pip install onnx onnxruntime") from None
        super().__init__(directory)
        self.session = onnxruntime.InferenceSession(self.path, providers=["CPUExecutionProvider"])

    def run(self, image: torch.Tensor) -> dict:
        arrays = self.session.run(list(self._names), {"image": image.numpy()})
        return {name: torch.from_numpy(a) for name, a in zip(self._names, arrays)}
