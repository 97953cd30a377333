"""Trace a detector into TorchScript or ONNX: detectron2's ``TracingAdapter`` with traceable NMS."""
import contextlib
import os
import sys
import types
import warnings
from unittest import mock

import torch

__all__ = ["ExportError", "trace_torchscript", "export_onnx"]

# The flattened outputs of a traced GeneralizedRCNN.inference(..., do_postprocess=False), in
# TracingAdapter's order (Instances fields sorted by name, then the image size).
OUTPUT_NAMES = ("boxes", "classes", "scores", "image_size")
_FIELDS = ("pred_boxes", "pred_classes", "scores")
# RoiAlign has coordinate_transformation_mode (ROIAlignV2, aligned=True) from opset 16; 17 is
# the opset the parity tests export and check with.
ONNX_OPSET = 17


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message says why and what to do."""


def tracing_adapter_class():
    """detectron2's ``TracingAdapter``; on 0.6 without importing its caffe2 exporter.

    detectron2 0.6's ``detectron2/export/__init__.py`` imports caffe2 (gone from PyTorch
    since 1.x); ``TracingAdapter`` itself does not need it. Where that import fails, the
    ``detectron2.export`` package is registered without running its ``__init__`` so that its
    ``flatten`` module imports.
    """
    try:
        from detectron2.export import TracingAdapter
    except ModuleNotFoundError as e:
        if "caffe2" not in str(e):
            raise
        import detectron2

        package = types.ModuleType("detectron2.export")
        package.__path__ = [os.path.join(os.path.dirname(detectron2.__file__), "export")]
        sys.modules["detectron2.export"] = package
        from detectron2.export.flatten import TracingAdapter

        package.TracingAdapter = TracingAdapter  # what the next `from detectron2.export` asks
    return TracingAdapter


def raw_inference(model, inputs):
    """The model's detections in the input tensor's pixels: what the traced model returns.

    Scaling to the original image is the caller's (``detector_postprocess``), as the image's
    original size is not an input.
    """
    return model.inference(inputs, do_postprocess=False)


def tracing_adapter(model, image: torch.Tensor):
    """``TracingAdapter(model, [{"image": image}])`` returning boxes, classes, scores, size."""
    adapter = tracing_adapter_class()(model, [{"image": image}], inference_func=raw_inference)
    # Eval mode on the adapter too: torch.onnx.export restores the adapter's mode after the
    # export, recursively, which would leave a training-mode adapter's model in training.
    return adapter.eval()


def _batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's batched NMS in fp32: detectron2 main's ``batched_nms``, traceable."""
    from torchvision.ops import boxes as box_ops

    return box_ops.batched_nms(boxes.float(), scores, idxs, iou_threshold)


@contextlib.contextmanager
def traceable_nms():
    """While tracing: the RPN and box head call :func:`_batched_nms`.

    detectron2 0.6's ``batched_nms`` runs a Python loop over ``torch.unique(idxs).tolist()``
    for 40000 boxes or more (e.g. 1000 proposals x 80 classes at a score threshold of 0); a
    trace would keep the classes of the sample only and drop every other class's boxes. Under
    tracing torchvision uses its coordinate trick, one NMS over class-offset boxes: the same
    boxes kept. Applied on every detectron2 version (git main already calls torchvision).
    """
    targets = ("detectron2.modeling.proposal_generator.proposal_utils.batched_nms",
               "detectron2.modeling.roi_heads.fast_rcnn.batched_nms")
    with contextlib.ExitStack() as stack:
        for target in targets:
            stack.enter_context(mock.patch(target, _batched_nms))
        yield


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    # Every shape-dependent Python branch warns while tracing; the parity check is what tells.
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", UserWarning)
    return stack


def _check_schema(adapter) -> None:
    """The outputs must be one image's Instances with exactly the fields OUTPUT_NAMES names."""
    schema = adapter.outputs_schema
    inner = getattr(schema, "schemas", [None])[0]
    keys = list(getattr(inner, "keys", []) or [])
    if keys != list(_FIELDS):
        raise ExportError(
            f"the traced model returns {keys or schema} instead of the fields {list(_FIELDS)}: "
            "only box detectors (no masks or keypoints) can be exported"
        )


def trace_torchscript(model, image: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of the model's TracingAdapter on ``image``."""
    adapter = tracing_adapter(model, image)
    with torch.no_grad(), traceable_nms(), _quiet():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    _check_schema(adapter)
    return traced


def export_onnx(model, image: torch.Tensor, path: str) -> None:
    """``torch.onnx.export`` (TorchScript-based, ``dynamo=False``) with dynamic H and W.

    The dynamo exporter (torch.export) cannot take detectron2's data-dependent Python
    control flow (Instances, per-level loops over boxes), so the tracing exporter is used.
    """
    adapter = tracing_adapter(model, image)
    dynamic = {"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
               "classes": {0: "detections"}, "scores": {0: "detections"}}
    with torch.no_grad(), traceable_nms(), _quiet():
        torch.onnx.export(
            adapter, adapter.flattened_inputs, path, dynamo=False, opset_version=ONNX_OPSET,
            input_names=["image"], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
        )
    _check_schema(adapter)
