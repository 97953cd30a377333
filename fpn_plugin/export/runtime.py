"""Run an exported detector as ``DefaultPredictor`` runs the eager one: resize, run, rescale."""
import json
import os
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..optional import require

__all__ = ["TorchScriptPredictor", "OnnxPredictor", "ExportedModel", "load_exported"]


def onnxruntime_or_none():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def exported_runner(fmt: str, path: str) -> Optional[Callable[[torch.Tensor], tuple]]:
    """A function image -> (boxes, classes, scores, image_size) running the written file (CPU).

    Args:
        fmt: "torchscript" (``torch.jit.load``) or "onnx" (an onnxruntime session).
        path: the model file.

    Returns:
        The function; None for ONNX when onnxruntime is not installed.
    """
    if fmt == "torchscript":
        module = torch.jit.load(path, map_location="cpu")

        def run(image):
            with torch.no_grad():
                return tuple(module(image.cpu()))

        return run
    onnxruntime = onnxruntime_or_none()
    if onnxruntime is None:
        return None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda image: tuple(torch.from_numpy(x) for x in
                               session.run(None, {"image": image.cpu().numpy()}))


def detections_at_size(boxes, classes, scores, input_hw, height: int, width: int):
    """The exported model's outputs for an input of size ``input_hw`` as ``Instances`` of the
    original ``height`` x ``width`` image: scaled and clipped as ``GeneralizedRCNN`` does."""
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Boxes, Instances

    instances = Instances(tuple(input_hw))
    instances.pred_boxes = Boxes(boxes.float())
    instances.scores = scores.float()
    instances.pred_classes = classes.long()
    return detector_postprocess(instances, height, width)


class ExportedModel:
    """An exported file called as the eager detectron2 model is, for code written for it.

    ``model([{"image": CHW tensor, "height": h, "width": w}, ...])`` returns one
    ``{"instances": Instances}`` per input, in ``height`` x ``width`` coordinates (default: the
    input's size). The image is the model input (resized, INPUT.FORMAT), as for the eager model.
    """

    def __init__(self, run):
        """
        Args:
            run: image -> (boxes, classes, scores, image_size), e.g.
                :func:`exported_runner`.
        """
        self.run = run

    def __call__(self, inputs: Sequence[dict]) -> List[dict]:
        outputs = []
        for x in inputs:
            image = x["image"]
            boxes, classes, scores, _ = self.run(image)
            h, w = image.shape[1:]
            outputs.append({"instances": detections_at_size(
                boxes, classes, scores, (h, w), x.get("height", h), x.get("width", w))})
        return outputs


class _ExportedPredictor:
    """What both runners share: ``export.json``, the resize and detectron2's postprocessing.

    Attributes:
        class_names (list[str] or None): names of the contiguous class ids.
        metadata (dict): the contents of ``export.json``.
    """

    format = None  # "torchscript" or "onnx", the format the folder must hold
    batch_size = 1  # images per run: the export takes one image

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
        self._run = exported_runner(self.format, self.path)

    def model_input(self, rgb: np.ndarray) -> torch.Tensor:
        """The exported model's input for an RGB uint8 image: resized, INPUT.FORMAT, CHW float."""
        image = rgb if self.input_format == "RGB" else rgb[:, :, ::-1]
        resized = self.aug.get_transform(image).apply_image(image)
        return torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))

    def run(self, image: torch.Tensor) -> dict:
        """The file's outputs for one model input, by name (boxes, classes, scores, image_size)."""
        return dict(zip(self._names, self._run(image)))

    def _instances(self, image: torch.Tensor, height: int, width: int):
        out = self.run(image)
        return detections_at_size(out["boxes"], out["classes"], out["scores"], tuple(image.shape[1:]), height, width)

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


class OnnxPredictor(_ExportedPredictor):
    """Runs ``model.onnx`` of an export folder with onnxruntime (CPU)."""

    format = "onnx"

    def __init__(self, directory: str):
        require("onnxruntime", "OnnxPredictor")
        super().__init__(directory)


def load_exported(directory: str) -> _ExportedPredictor:
    """The predictor for an export folder: ``TorchScriptPredictor`` or ``OnnxPredictor``, by the
    format its ``export.json`` names."""
    path = os.path.join(directory, "export.json")
    if not os.path.isfile(path):
        raise ValueError(f"{directory}: no export.json: not a folder written by `python -m fpn_plugin.export`")
    with open(path) as f:
        fmt = json.load(f)["format"]
    return {"torchscript": TorchScriptPredictor, "onnx": OnnxPredictor}[fmt](directory)
