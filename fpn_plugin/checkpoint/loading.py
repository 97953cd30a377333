"""``PluginCheckpointer``: detectron2's checkpointer that knows every weight format users bring.

``MODEL.WEIGHTS`` may be any of these, recognised from the content of the file (only the VGG16
flavour, torchvision or Caffe, comes from its name, as no tensor tells them apart):

=====================================  =======================================================
torchvision ImageNet ResNet ``.pth``   ``conv1.weight``, ``layer1.0.conv1.weight``, ``fc.*``
``torchvision://resnet50`` URLs        the same files, fetched into torch's hub cache
MSRA ImageNet ``R-50.pkl``             Caffe2 names (``res2_0_branch2a_w``), detectron2 zoo
torchvision / Caffe VGG16 ``.pth``     ``features.N.*``, ``classifier.N.*`` (fpn_plugin.checkpoint.vgg)
torchvision Faster R-CNN ``.pth``      ``backbone.body.*``, ``roi_heads.box_predictor.*``; also
                                       ``torchvision://fasterrcnn_resnet50_fpn`` URLs
detectron2 detectors                   ``model_final_*.pkl``/``.pth``: ``backbone.bottom_up.res2...``
fpn_plugin's own checkpoints           keys equal to the model's
=====================================  =======================================================

Unlike detectron2, which only warns, every weight of the pretrained part must be found: a file
of another depth or architecture, or a classifier head alone, raises
:class:`CheckpointMismatchError` saying what does not match. The pixel format, mean and std and
the stride placement the weights were trained with are checked against the model's config
(:mod:`fpn_plugin.checkpoint.pixel_format`).

Files are read by :mod:`fpn_plugin.checkpoint.safe_load`: a ``.pkl`` or ``.pth`` that asks for
anything but weights (a pickle calling ``os.system``, say) is refused before any of it runs,
unless ``MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE`` says the file is trusted.
"""
import logging
from typing import Dict, Optional, Tuple

import torch

from detectron2.checkpoint import DetectionCheckpointer

from . import safe_load, torchvision_urls
from .mismatch import (
    CheckpointMismatchError, check_complete, format_keys, refuse_backbone_only, sample_keys,
    unrecognised_message,
)
from .pixel_format import (
    MSRA_FORMAT, TORCHVISION_FORMAT, PixelFormat, PixelFormatMismatchError, detectron2_format,
    pixel_format_problems,
)
from .resnet_formats import (
    caffe2_resnet_to_torchvision,
    detectron2_resnet_to_plugin,
    find_resnet_modules,
    is_caffe2_resnet,
    is_detectron2_resnet,
    is_torchvision_resnet,
    torchvision_resnet_to_plugin,
)
from .torchvision_detection import is_torchvision_detector, torchvision_detector_to_detectron2

__all__ = ["PluginCheckpointer", "install_for_detectron2"]

logger = logging.getLogger(__name__)

_CHECKS = ("error", "warn", "off")


class PluginCheckpointer(DetectionCheckpointer):
    """A ``DetectionCheckpointer`` that converts torchvision, MSRA and detectron2 weights.

    Use it wherever detectron2 uses ``DetectionCheckpointer`` to load ``MODEL.WEIGHTS``::

        PluginCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR).load(cfg.MODEL.WEIGHTS)
    """

    def __init__(self, model, save_dir: str = "", *, format_check: str = "error",
                 allow_unsafe_pickle: bool = False, for_inference: bool = False, **kwargs):
        """
        Args:
            model, save_dir, kwargs: as for ``DetectionCheckpointer``.
            format_check: "error", "warn" or "off": what a mismatch between the pixel format the
                weights expect and the model's config does (``MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK``).
            allow_unsafe_pickle: load files that ask for more than weights with plain pickle
                (logged) instead of refusing them (``MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE``);
                only for trusted files.
            for_inference: True for prediction and evaluation: every weight of the model must
                come from the file (a box predictor of another class count, or a backbone-only
                file, is an error). False (default) for training, where a new box predictor
                (fine-tuning to another class count) and ImageNet backbones are fine.
        """
        if format_check not in _CHECKS:
            raise ValueError(
                f"MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK is {format_check!r}; use one of {_CHECKS}."
            )
        super().__init__(model, save_dir, **kwargs)
        self.format_check = format_check
        self.allow_unsafe_pickle = bool(allow_unsafe_pickle)
        self.for_inference = for_inference
        torchvision_urls.register()

    @classmethod
    def from_config(cls, cfg, model, save_dir: str = "", **kwargs) -> "PluginCheckpointer":
        """A checkpointer for ``model`` with ``MODEL.PLUGIN_WEIGHTS.{FORMAT_CHECK,
        ALLOW_UNSAFE_PICKLE}`` from ``cfg``."""
        keys = cfg.MODEL.PLUGIN_WEIGHTS
        return cls(model, save_dir, format_check=keys.FORMAT_CHECK,
                   allow_unsafe_pickle=keys.ALLOW_UNSAFE_PICKLE, **kwargs)

    # ------------------------------------------------------------------------------------------
    def _load_model(self, checkpoint):
        state = checkpoint["model"]
        self._convert_ndarray_to_tensor(state)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        kind, converted, fmt, assumed = self._convert(state, checkpoint.get("__author__"), self.for_inference)
        logger.info("MODEL.WEIGHTS recognised as: %s", kind)
        if fmt is not None:
            self._check_pixel_format(fmt, kind, assumed)
        checkpoint["model"] = converted
        # The conversion above replaces detectron2's name-matching heuristics.
        checkpoint["matching_heuristics"] = False
        return super()._load_model(checkpoint)

    def _convert(
        self, state: Dict[str, torch.Tensor], author: Optional[str], inference: bool = False
    ) -> Tuple[str, Dict[str, torch.Tensor], Optional[PixelFormat], bool]:
        """Return (description, state dict keyed like the model's, expected format, assumed?)."""
        model_state = self.model.state_dict()
        kind, converted, fmt, assumed = self._convert_known(state, author, model_state, inference)
        if inference and kind in _BACKBONE_ONLY:
            refuse_backbone_only(kind, converted, model_state)
        return kind, converted, fmt, assumed

    def _convert_known(self, state, author, model_state, inference):
        if author == "Caffe2" or is_caffe2_resnet(state):
            if not is_caffe2_resnet(state):
                raise CheckpointMismatchError(
                    "MODEL.WEIGHTS is a Caffe2/Detectron1 pickle but not an MSRA ImageNet ResNet "
                    f"(no conv1_w / res2_0_branch2a_w; keys: {sample_keys(state)}). Only the MSRA "
                    "ImageNet ResNets (R-50.pkl, R-101.pkl) of this format are supported."
                )
            tv = caffe2_resnet_to_torchvision(state)
            converted, unused = torchvision_resnet_to_plugin(tv, self.model, source="MSRA Caffe2")
            _log_unused(unused)
            return "MSRA ImageNet ResNet (Caffe2 names)", converted, MSRA_FORMAT, False
        if _looks_like_vgg(state):
            converted, fmt = self._convert_vgg16(state, model_state)
            return "VGG16 ImageNet classifier", converted, fmt, False
        if is_torchvision_detector(state):
            converted, how = torchvision_detector_to_detectron2(state, self.model)
            check_complete(converted, model_state, "a torchvision Faster R-CNN detector", inference)
            return f"torchvision Faster R-CNN detector ({how})", converted, TORCHVISION_FORMAT, False
        if is_torchvision_resnet(state):
            converted, unused = torchvision_resnet_to_plugin(state, self.model)
            _log_unused(unused)
            return "torchvision ImageNet ResNet", converted, TORCHVISION_FORMAT, False
        if is_detectron2_resnet(state):
            fmt, assumed = detectron2_format(state)
            converted = detectron2_resnet_to_plugin(state, self.model)
            converted.pop("pixel_mean", None)
            converted.pop("pixel_std", None)
            check_complete(converted, model_state, "a detectron2 detector checkpoint", inference)
            return "detectron2 detector (ResNet names converted)", converted, fmt, assumed
        if set(state) & set(model_state):
            shared = len(set(state) & set(model_state))
            check_complete(state, model_state, f"a checkpoint that shares {shared} of its "
                            f"{len(state)} weight names with the model", inference)
            return "checkpoint with this model's parameter names", state, None, False
        raise CheckpointMismatchError(unrecognised_message(state, model_state))

    def _load_file(self, filename):
        # The VGG16 flavours (torchvision / Caffe) differ only by file name: remember it.
        self._loaded_file = filename
        return safe_load.load_checkpoint_file(self, filename)

    def _convert_vgg16(self, state, model_state) -> Tuple[Dict[str, torch.Tensor], PixelFormat]:
        try:
            # The VGG16 converter is imported only when needed.
            from .vgg import vgg16_pixel_format, vgg16_to_plugin
        except ImportError as e:
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS is a VGG16 file, but fpn_plugin.checkpoint.vgg cannot be imported "
                f"({e}): VGG16 weights need it."
            ) from e
        fmt = vgg16_pixel_format(getattr(self, "_loaded_file", ""))
        converted = dict(vgg16_to_plugin(state, self.model))
        wrong = [k for k, v in converted.items()
                 if k not in model_state or tuple(v.shape) != tuple(model_state[k].shape)]
        if wrong:
            raise CheckpointMismatchError(
                f"The VGG16 conversion produced weights that do not fit the model: {format_keys(wrong)}."
            )
        return converted, fmt

    def _check_pixel_format(self, fmt: PixelFormat, kind: str, assumed: bool) -> None:
        if self.format_check == "off":
            return
        problems = pixel_format_problems(self.model, fmt)
        if not problems:
            return
        message = (
            f"MODEL.WEIGHTS ({kind}) {'is assumed to expect' if assumed else 'expects'} "
            f"{fmt.name} inputs: {fmt.describe()}"
            + (f", STRIDE_IN_1X1 {fmt.stride_in_1x1}" if fmt.stride_in_1x1 is not None else "")
            + ". The config differs: " + "; ".join(problems)
            + ". Set those keys to the weights' values (see the configs/ matching these weights), "
            "or set MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK to 'warn' or 'off' if this is intended."
        )
        if self.format_check == "error" and not assumed:
            raise PixelFormatMismatchError(message)
        logger.warning(message)


def _has_plugin_modules(model) -> bool:
    from ..modeling.vgg import VGG16

    resnets, stages = find_resnet_modules(model)
    return bool(resnets or stages) or any(isinstance(m, VGG16) for m in model.modules())


def install_for_detectron2() -> None:
    """Make detectron2's own ``DetectionCheckpointer`` load plugin models as
    :class:`PluginCheckpointer` does: every weight format converted, with the same strictness.

    ``DefaultPredictor``, ``DefaultTrainer`` and users' detectron2 code build a plain
    ``DetectionCheckpointer``, whose name-matching heuristics find none of the plugin ResNet's
    names in a detectron2 file and only warn, leaving the model random. Models without plugin
    modules load exactly as before. Runs on ``import fpn_plugin``.
    """
    if getattr(DetectionCheckpointer._load_model, "_fpn_plugin", False):
        return
    original_load_model, original_load = DetectionCheckpointer._load_model, DetectionCheckpointer.load

    def load(self, path, *args, **kwargs):
        self._loaded_file = path  # the VGG16 flavour is told by the file name
        return original_load(self, path, *args, **kwargs)

    def _load_model(self, checkpoint):
        if isinstance(self, PluginCheckpointer) or not _has_plugin_modules(self.model):
            return original_load_model(self, checkpoint)
        # An eval-mode model (DefaultPredictor makes one) is for prediction: nothing may stay random.
        plugin = PluginCheckpointer(self.model, allow_unsafe_pickle=getattr(self, "allow_unsafe_pickle", False),
                                    for_inference=not self.model.training)
        plugin._loaded_file = getattr(self, "_loaded_file", "")
        return plugin._load_model(checkpoint)

    _load_model._fpn_plugin = True
    DetectionCheckpointer.load, DetectionCheckpointer._load_model = load, _load_model


def _looks_like_vgg(state) -> bool:
    """torchvision's VGG layout (``features.N.*``/``classifier.N.*``), including wrong VGGs
    (VGG19, vgg16_bn, classifier only) that the VGG16 converter explains."""
    try:
        from .vgg import looks_like_vgg_state_dict
    except ImportError:
        return "features.0.weight" in state and not any(k.startswith("backbone.") for k in state)
    return looks_like_vgg_state_dict(state)


# The kinds of file that hold an ImageNet backbone only (see PluginCheckpointer._convert_known).
_BACKBONE_ONLY = ("MSRA ImageNet ResNet (Caffe2 names)", "VGG16 ImageNet classifier",
                  "torchvision ImageNet ResNet")


def _log_unused(unused) -> None:
    if unused:
        logger.info("Weights in MODEL.WEIGHTS that this model does not use: %s", format_keys(unused))
