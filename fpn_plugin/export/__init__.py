"""Export a detector to TorchScript or ONNX for deployment, and run the exported files.

``python -m fpn_plugin.export --config-file C --weights W --format torchscript|onnx --output DIR
[--sample-image PATH] [KEY VALUE ...]`` builds the model as :class:`~fpn_plugin.inference.Predictor`
does (same loader, same class names), traces it with detectron2's ``TracingAdapter`` and writes
``DIR/model.ts`` (``torch.jit.trace``) or ``DIR/model.onnx`` (``torch.onnx.export``, the
TorchScript-based exporter, opset 17, dynamic height and width) and ``DIR/export.json``. It runs
on the CPU unless the config file or the overrides set ``MODEL.DEVICE``.

What the exported model takes: one float32 tensor ``image`` of shape ``(3, H, W)``, channels in
the config's ``INPUT.FORMAT`` (RGB or BGR), values 0..255, already resized as detectron2's
``DefaultPredictor`` resizes (``ResizeShortestEdge([MIN_SIZE_TEST, MIN_SIZE_TEST],
MAX_SIZE_TEST)``, bilinear). Any H and W work: the trace is not tied to the sample's size.
Normalisation (``PIXEL_MEAN``/``PIXEL_STD``) and padding to the backbone's size divisibility
happen inside the model.

What it returns, in this order (``export.json`` lists the names): ``boxes`` float32 ``(N, 4)``
XYXY in the pixel coordinates of the input tensor (not of the original image: scale them back
with ``detectron2.modeling.postprocessing.detector_postprocess``, as the runners do),
``classes`` int64 ``(N,)`` contiguous class ids (names in ``export.json``), ``scores`` float32
``(N,)`` sorted best first, and ``image_size`` int64 ``(2,)``, the input's (H, W). N is at most
``TEST.DETECTIONS_PER_IMAGE``, after ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` and NMS.

``export.json`` also holds the class names, input format, pixel mean/std, the resize rule and
the versions of the tools that wrote the file. :class:`TorchScriptPredictor` and
:class:`OnnxPredictor` (needs ``onnxruntime``) read it, resize an image as ``DefaultPredictor``
does, run the file and return ``{"instances": Instances}`` in the original image's coordinates;
:func:`load_exported` picks the right one for a folder, and ``predict.py --exported DIR`` runs
it on images as it runs the eager model. :class:`~fpn_plugin.export.runtime.ExportedModel` calls
an exported file as the eager model is called (a list of ``{"image", "height", "width"}``), e.g.
in a benchmark.

Modules: :mod:`~fpn_plugin.export.tracing` (the traceable model and the two writers),
:mod:`~fpn_plugin.export.compare` (the check against the eager model),
:mod:`~fpn_plugin.export.exporter` (building, checking and writing: :func:`export_model`),
:mod:`~fpn_plugin.export.runtime` (running the files).

Differences from the eager model, fixed at export time: detectron2 0.6's ``batched_nms`` loops
over the classes present (Python ``list``) when it gets 40000 boxes or more, which a trace would
freeze to the classes of the sample image; the export swaps in torchvision's ``batched_nms``
(what detectron2 main calls), the same NMS, in its traceable form. The eager model keeps the
filter that drops non-finite boxes; a trace keeps the branch the sample took (none dropped).
Each export is checked against the eager model on the sample and on a second size, and the file
is removed, with an error, when the detections differ.
"""
from .exporter import ExportError, export_model
from .runtime import OnnxPredictor, TorchScriptPredictor, load_exported

__all__ = ["export_model", "load_exported", "TorchScriptPredictor", "OnnxPredictor", "ExportError"]
