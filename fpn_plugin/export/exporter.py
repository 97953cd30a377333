"""Build, trace, check and write a detector: :func:`export_model` (see the package docstring)."""
import json
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from ..optional import install_hint
from .compare import verify
from .runtime import onnxruntime_or_none, exported_runner
from .tracing import ONNX_OPSET, OUTPUT_NAMES, ExportError, export_onnx, trace_torchscript

__all__ = ["ExportError", "export_model", "load_model"]

logger = logging.getLogger(__name__)

# File written per format, inside the output folder.
FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
_ONNX_HINT = install_hint("onnx")


def load_model(config_file: str, weights: str, opts: Sequence[str] = ()):
    """The config and a :class:`~fpn_plugin.inference.Predictor` holding the loaded model.

    The config comes from :func:`~fpn_plugin.config.setup_config` as predict.py's does (the
    config's datasets registered for their class names, none of their files read); the
    Predictor is the project's one way to build a detector and load its weights
    (``fit_classes_to_checkpoint``, ``PluginCheckpointer(..., for_inference=True)``).
    ``MODEL.DEVICE`` is "cpu" unless the config file or ``opts`` set it.

    Raises:
        ExportError: ``weights`` is a local path that does not exist.
    """
    from ..config import setup_config
    from ..inference import Predictor

    if "://" not in weights and not os.path.isfile(weights):
        raise ExportError(f"--weights {weights}: no such file")
    opts = list(opts)
    device = None if _sets_device(config_file, opts) else "cpu"
    # The gather ROIAlign groups boxes in Python by their sampling grid, which a trace would
    # freeze to the sample image's boxes: export torchvision's RoiAlign op instead.
    opts += ["MODEL.WEIGHTS", weights, "MODEL.PLUGIN_ROI_ALIGN", "torchvision"]
    cfg = setup_config(config_file, opts, device=device, datasets="register")
    _check_exportable(cfg)
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


def require_onnx() -> None:
    """Raise a clear ExportError when the onnx package is not installed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError(f"--format onnx needs the onnx package: {_ONNX_HINT}") from None


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
        ort = onnxruntime_or_none()
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
        check: compare the file with the eager model on two sizes
            (see :func:`fpn_plugin.export.compare.verify`).

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
