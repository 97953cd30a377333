"""Build, trace and write a detector: :func:`export_model` (see the package docstring)."""
import contextlib
import json
import logging
import os
import sys
import types
import warnings
from typing import Callable, Optional, Sequence, Tuple
from unittest import mock

import numpy as np
import torch

from .compare import compare_detections

__all__ = ["ExportError", "export_model", "load_model", "FORMATS", "OUTPUT_NAMES"]

logger = logging.getLogger(__name__)

# File written per format, inside the output folder.
FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
# The flattened outputs of a traced GeneralizedRCNN.inference(..., do_postprocess=False), in
# TracingAdapter's order (Instances fields sorted by name, then the image size).
OUTPUT_NAMES = ("boxes", "classes", "scores", "image_size")
_FIELDS = ("pred_boxes", "pred_classes", "scores")
# RoiAlign has coordinate_transformation_mode (ROIAlignV2, aligned=True) from opset 16; 17 is
# the opset the parity tests export and check with.
ONNX_OPSET = 17
# What the export-time check allows between the exported and the eager model (pixels, score).
BOX_ATOL, SCORE_ATOL = 0.05, 1e-4
_ONNX_HINT = "pip install onnx onnxruntime"


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message says why and what to do."""


def load_model(config_file: str, weights: str, opts: Sequence[str] = ()):
    """The config and a :class:`~fpn_plugin.inference.Predictor` holding the loaded model.

    The Predictor is the project's one way to build a detector and load its weights
    (``fit_classes_to_checkpoint``, ``PluginCheckpointer(..., for_inference=True)``).
    ``MODEL.DEVICE`` is "cpu" unless the config file or ``opts`` set it.

    Raises:
        ExportError: ``weights`` is a local path that does not exist.
    """
    from ..config import load_config
    from ..data import setup_datasets
    from ..inference import Predictor

    if "://" not in weights and not os.path.isfile(weights):
        raise ExportError(f"--weights {weights}: no such file")
    opts = list(opts)
    if not _sets_device(config_file, opts):
        opts = ["MODEL.DEVICE", "cpu"] + opts
    cfg = load_config(config_file, opts + ["MODEL.WEIGHTS", weights])
    _check_exportable(cfg)
    setup_datasets(cfg, config_file)  # class names of the config's datasets, as Predictor reads
    return cfg, Predictor(cfg)  # fp32


def _check_exportable(cfg) -> None:
    if cfg.MODEL.META_ARCHITECTURE == "TorchvisionGeneralizedRCNN":
        # Its resize scale is computed from the image at run time, which a trace fixes to the
        # sample's value: the exported model would be wrong at every other size.
        size = cfg.INPUT.TORCHVISION_RESIZE
        raise ExportError(
            "META_ARCHITECTURE TorchvisionGeneralizedRCNN resizes inside the model, which cannot be "
            "exported. Export it with detectron2's resize instead: add MODEL.META_ARCHITECTURE "
            f"GeneralizedRCNN INPUT.MIN_SIZE_TEST {size.MIN_SIZE} INPUT.MAX_SIZE_TEST {size.MAX_SIZE} "
            "(the same weights; detections move slightly on images whose size needs resizing)."
        )


def _sets_device(config_file: str, opts: Sequence[str]) -> bool:
    from detectron2.config import CfgNode

    if "MODEL.DEVICE" in opts[::2]:
        return True
    loaded = CfgNode.load_yaml_with_base(config_file, allow_unsafe=True)  # with its _BASE_ files
    return "DEVICE" in (loaded.get("MODEL") or {})


def sample_input(predictor, sample_image: Optional[str] = None) -> torch.Tensor:
    """The model input (CHW, INPUT.FORMAT, resized) for the sample image or a seeded noise one."""
    from ..inference import load_image

    if sample_image is not None:
        rgb = load_image(sample_image)
    else:
        # Any picture traces the same graph; a seeded one keeps exports reproducible.
        side = predictor.cfg.INPUT.MIN_SIZE_TEST
        rgb = np.random.default_rng(0).integers(0, 256, (side, side * 5 // 4, 3), dtype=np.uint8)
    return predictor.model_input(rgb)["image"]


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


def _inference(model, inputs):
    # The detections in the input tensor's pixels; scaling to the original image is the
    # caller's (detector_postprocess), as the image's original size is not an input.
    return model.inference(inputs, do_postprocess=False)


def tracing_adapter(model, image: torch.Tensor):
    """``TracingAdapter(model, [{"image": image}])`` returning boxes, classes, scores, size."""
    adapter = tracing_adapter_class()(model, [{"image": image}], inference_func=_inference)
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


def require_onnx() -> None:
    """Raise a clear ExportError when the onnx package is not installed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError(f"--format onnx needs the onnx package: {_ONNX_HINT}") from None


def _onnxruntime_or_none():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def exported_runner(fmt: str, path: str) -> Optional[Callable[[torch.Tensor], tuple]]:
    """A function image -> (boxes, classes, scores, image_size) running the written file.

    None for ONNX when onnxruntime is not installed.
    """
    if fmt == "torchscript":
        module = torch.jit.load(path, map_location="cpu")
        return lambda image: tuple(x.detach() for x in module(image.cpu()))
    onnxruntime = _onnxruntime_or_none()
    if onnxruntime is None:
        return None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda image: tuple(torch.from_numpy(x) for x in
                               session.run(None, {"image": image.cpu().numpy()}))


def check_images(image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The sample and another size (its transpose, or a crop when it is square)."""
    other = image.transpose(1, 2) if image.shape[1] != image.shape[2] else image[:, :, : image.shape[2] * 3 // 4]
    return image, other.contiguous()


def verify(model, run: Callable, image: torch.Tensor) -> dict:
    """Compare the exported model with the eager one on the sample and on another size.

    Returns:
        dict: the largest box and score differences over both images.

    Raises:
        ExportError: the detections differ (count, classes, or beyond BOX_ATOL/SCORE_ATOL).
    """
    worst = {"max_box_diff": 0.0, "max_score_diff": 0.0}
    for x in check_images(image):
        with torch.no_grad():
            eager = _inference(model, [{"image": x}])[0].to("cpu")
        boxes, classes, scores, _ = run(x)
        diff = compare_detections(eager.pred_boxes.tensor, eager.scores, eager.pred_classes,
                                  boxes, scores, classes)
        if diff is None or diff["max_box_diff"] > BOX_ATOL or diff["max_score_diff"] > SCORE_ATOL:
            raise ExportError(
                f"the exported model's detections on a {tuple(x.shape[1:])} input differ from "
                f"the eager model's ({len(eager)} eager, {len(scores)} exported; {diff}): the "
                "file was removed"
            )
        worst = {k: max(worst[k], diff[k]) for k in worst}
    return worst


def _versions(fmt: str) -> dict:
    import detectron2
    import torchvision

    from .. import __version__

    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "torchvision": torchvision.__version__, "detectron2": detectron2.__version__,
                "detectron2_path": os.path.dirname(detectron2.__file__), "fpn_plugin": __version__}
    if fmt == "onnx":
        import onnx

        versions["onnx"] = onnx.__version__
        versions["onnx_opset"] = ONNX_OPSET
        ort = _onnxruntime_or_none()
        versions["onnxruntime"] = ort.__version__ if ort is not None else None
    return versions


def metadata(cfg, predictor, fmt: str, image: torch.Tensor, check: Optional[dict]) -> dict:
    """What ``export.json`` holds: the contract of the file and what wrote it."""
    return {
        "format": fmt,
        "file": FORMATS[fmt],
        "input": {"name": "image", "shape": ["3", "height", "width"], "dtype": "float32",
                  "channels": cfg.INPUT.FORMAT, "range": "0..255",
                  "note": "already resized by the resize rule; normalised and padded inside"},
        "outputs": {"names": list(OUTPUT_NAMES),
                    "boxes": "float32 (N, 4) XYXY in the input tensor's pixels",
                    "classes": "int64 (N,) contiguous class ids, see class_names",
                    "scores": "float32 (N,) best first",
                    "image_size": "int64 (2,) the input's (height, width)"},
        "class_names": predictor.class_names,
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
        "pixel_std": list(cfg.MODEL.PIXEL_STD),
        "resize": {"rule": "ResizeShortestEdge([MIN_SIZE_TEST, MIN_SIZE_TEST], MAX_SIZE_TEST), bilinear",
                   "min_size_test": cfg.INPUT.MIN_SIZE_TEST, "max_size_test": cfg.INPUT.MAX_SIZE_TEST},
        "score_thresh_test": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        "sample_size": list(image.shape[1:]),
        "check": check,  # None: not run (ONNX without onnxruntime)
        "weights": cfg.MODEL.WEIGHTS,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "versions": _versions(fmt),
    }


def export_model(config_file: str, weights: str, fmt: str, output: str,
                 sample_image: Optional[str] = None, opts: Sequence[str] = (), check: bool = True) -> str:
    """Export the detector to ``output/model.ts`` or ``output/model.onnx`` and ``export.json``.

    Args:
        fmt: "torchscript" or "onnx".
        sample_image: the image traced on (default: seeded noise at MIN_SIZE_TEST).
        opts: config overrides, KEY VALUE ...
        check: compare the file with the eager model on two sizes (see :func:`verify`).

    Returns:
        str: the path of the model file.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    cfg, predictor = load_model(config_file, weights, opts)
    image = sample_input(predictor, sample_image)
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, FORMATS[fmt])
    if fmt == "torchscript":
        trace_torchscript(predictor.model, image).save(path)
    else:
        export_onnx(predictor.model, image, path)
    result = None
    run = exported_runner(fmt, path) if check else None
    if run is not None:
        try:
            result = verify(predictor.model, run, image)
        except ExportError:
            os.remove(path)
            raise
        logger.info("exported %s matches the eager model: %s", path, result)
    with open(os.path.join(output, "export.json"), "w") as f:
        json.dump(metadata(cfg, predictor, fmt, image, result), f, indent=2)
    return path
