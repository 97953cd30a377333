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
the stride placement the weights were trained with are checked against the model's config.

Files are read by :mod:`fpn_plugin.checkpoint.safe_load`: a ``.pkl`` or ``.pth`` that asks for
anything but weights (a pickle calling ``os.system``, say) is refused before any of it runs,
unless ``MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE`` says the file is trusted.
"""
import logging
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from detectron2.checkpoint import DetectionCheckpointer

from . import safe_load, torchvision_urls
from .torchvision_detection import is_torchvision_detector, torchvision_detector_to_detectron2
from .resnet_formats import (
    CheckpointMismatchError,
    caffe2_resnet_to_torchvision,
    detectron2_resnet_to_plugin,
    find_resnet_modules,
    is_caffe2_resnet,
    is_detectron2_resnet,
    is_torchvision_resnet,
    torchvision_resnet_to_plugin,
)

__all__ = [
    "PluginCheckpointer",
    "box_predictor_classes",
    "install_for_detectron2",
    "CheckpointMismatchError",
    "PixelFormatMismatchError",
    "PixelFormat",
    "MSRA_FORMAT",
    "TORCHVISION_FORMAT",
]

logger = logging.getLogger(__name__)


class PixelFormatMismatchError(CheckpointMismatchError):
    """The weights expect other input pixels (format, mean, std) or stride placement."""


@dataclass(frozen=True)
class PixelFormat:
    """How the images were given to a network when its weights were trained."""

    name: str
    input_format: Optional[str]  # "BGR" / "RGB"; None when the file does not say
    mean: Sequence[float]  # on 0-255 pixels, in input_format's channel order
    std: Sequence[float]
    stride_in_1x1: Optional[bool] = None  # for Bottleneck ResNets; None: not applicable

    def describe(self) -> str:
        fmt = self.input_format or "channel order not recorded"
        return f"{fmt}, MODEL.PIXEL_MEAN {list(self.mean)}, MODEL.PIXEL_STD {list(self.std)}"


# detectron2's defaults for its MSRA (Caffe2) ResNets: BGR 0-255, std 1.
MSRA_FORMAT = PixelFormat("MSRA/detectron2", "BGR", (103.53, 116.28, 123.675), (1.0, 1.0, 1.0), True)
# torchvision's ImageNet normalisation on 0-255 RGB pixels.
TORCHVISION_FORMAT = PixelFormat(
    "torchvision", "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), False
)

# Mean tolerance (0-255 scale) accepts Detectron1's MSRA means [102.98, 115.95, 122.77] for
# detectron2's [103.53, 116.28, 123.675] but not a swapped RGB/BGR order (20 apart).
_MEAN_ATOL = 1.0
_STD_RTOL = 0.05
_CHECKS = ("error", "warn", "off")
# Keys every checkpoint may lack: BatchNorm counters and non-persistent buffers.
_OPTIONAL = ("num_batches_tracked",)


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
            _refuse_backbone_only(kind, converted, model_state)
        return kind, converted, fmt, assumed

    def _convert_known(self, state, author, model_state, inference):
        if author == "Caffe2" or is_caffe2_resnet(state):
            if not is_caffe2_resnet(state):
                raise CheckpointMismatchError(
                    "MODEL.WEIGHTS is a Caffe2/Detectron1 pickle but not an MSRA ImageNet ResNet "
                    f"(no conv1_w / res2_0_branch2a_w; keys: {_sample(state)}). Only the MSRA "
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
            _check_complete(converted, model_state, "a torchvision Faster R-CNN detector", inference)
            return f"torchvision Faster R-CNN detector ({how})", converted, TORCHVISION_FORMAT, False
        if is_torchvision_resnet(state):
            converted, unused = torchvision_resnet_to_plugin(state, self.model)
            _log_unused(unused)
            return "torchvision ImageNet ResNet", converted, TORCHVISION_FORMAT, False
        if is_detectron2_resnet(state):
            fmt, assumed = _detectron2_format(state)
            converted = detectron2_resnet_to_plugin(state, self.model)
            converted.pop("pixel_mean", None)
            converted.pop("pixel_std", None)
            _check_complete(converted, model_state, "a detectron2 detector checkpoint", inference)
            return "detectron2 detector (ResNet names converted)", converted, fmt, assumed
        if set(state) & set(model_state):
            shared = len(set(state) & set(model_state))
            _check_complete(state, model_state, f"a checkpoint that shares {shared} of its "
                            f"{len(state)} weight names with the model", inference)
            return "checkpoint with this model's parameter names", state, None, False
        raise CheckpointMismatchError(_unrecognised_message(state, model_state))

    def _load_file(self, filename):
        # The VGG16 flavours (torchvision / Caffe) differ only by file name: remember it.
        self._loaded_file = filename
        return safe_load.load_checkpoint_file(self, filename)

    def _convert_vgg16(self, state, model_state) -> Tuple[Dict[str, torch.Tensor], PixelFormat]:
        try:
            # The VGG16 converter is imported only when needed.
            from .vgg import VGG16_PIXEL_FORMATS, vgg16_to_plugin, vgg16_weights_flavor
        except ImportError as e:
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS is a VGG16 file, but fpn_plugin.checkpoint.vgg cannot be imported "
                f"({e}): VGG16 weights need it."
            ) from e
        flavor = vgg16_weights_flavor(getattr(self, "_loaded_file", ""))
        pixels = VGG16_PIXEL_FORMATS[flavor]
        fmt = PixelFormat(f"{flavor} VGG16 (told by the file name)", pixels["INPUT.FORMAT"],
                          tuple(pixels["MODEL.PIXEL_MEAN"]), tuple(pixels["MODEL.PIXEL_STD"]))
        converted = dict(vgg16_to_plugin(state, self.model))
        wrong = [k for k, v in converted.items()
                 if k not in model_state or tuple(v.shape) != tuple(model_state[k].shape)]
        if wrong:
            raise CheckpointMismatchError(
                f"The VGG16 conversion produced weights that do not fit the model: {_fmt(wrong)}."
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


def pixel_format_problems(model, fmt: PixelFormat):
    """What in the model's config differs from the format the weights expect (empty: nothing)."""
    problems = []
    input_format = getattr(model, "input_format", None)
    if fmt.input_format and input_format and input_format != fmt.input_format:
        problems.append(f"INPUT.FORMAT is {input_format}, not {fmt.input_format}")
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if mean is not None:
        mean = [round(float(x), 3) for x in mean.flatten()]
        if len(mean) != len(fmt.mean) or any(abs(a - b) > _MEAN_ATOL for a, b in zip(mean, fmt.mean)):
            problems.append(f"MODEL.PIXEL_MEAN is {mean}, not {list(fmt.mean)}")
    if std is not None:
        std = [round(float(x), 3) for x in std.flatten()]
        if len(std) != len(fmt.std) or any(abs(a - b) > _STD_RTOL * b for a, b in zip(std, fmt.std)):
            problems.append(f"MODEL.PIXEL_STD is {std}, not {list(fmt.std)}")
    if fmt.stride_in_1x1 is not None:
        resnets, stages = find_resnet_modules(model)
        for prefix, module in list(resnets.items()) + list(stages.items()):
            # Only Bottleneck blocks have a 1x1 conv that can take the stride.
            has_1x1 = module.depth >= 50 if module in resnets.values() else hasattr(module[0], "conv3")
            if has_1x1 and module.stride_in_1x1 != fmt.stride_in_1x1:
                problems.append(
                    f"MODEL.PLUGIN_RESNET.STRIDE_IN_1X1 is {module.stride_in_1x1} at '{prefix}', "
                    f"not {fmt.stride_in_1x1}"
                )
                break
    return problems


def _looks_like_vgg(state) -> bool:
    """torchvision's VGG layout (``features.N.*``/``classifier.N.*``), including wrong VGGs
    (VGG19, vgg16_bn, classifier only) that the VGG16 converter explains."""
    try:
        from .vgg import looks_like_vgg_state_dict
    except ImportError:
        return "features.0.weight" in state and not any(k.startswith("backbone.") for k in state)
    return looks_like_vgg_state_dict(state)


def _detectron2_format(state) -> Tuple[PixelFormat, bool]:
    """The format a detectron2 checkpoint expects: its own pixel stats, else MSRA (assumed)."""
    if "pixel_mean" in state and "pixel_std" in state:
        mean = tuple(float(x) for x in state["pixel_mean"].flatten())
        std = tuple(float(x) for x in state["pixel_std"].flatten())
        return PixelFormat("the checkpoint's recorded", None, mean, std, None), False
    # detectron2's builtin R50/R101 detectors all start from the MSRA weights.
    return MSRA_FORMAT, True


# The kinds of file that hold an ImageNet backbone only (see PluginCheckpointer._convert_known).
_BACKBONE_ONLY = ("MSRA ImageNet ResNet (Caffe2 names)", "VGG16 ImageNet classifier",
                  "torchvision ImageNet ResNet")


def _refuse_backbone_only(kind: str, converted, model_state) -> None:
    left = [k for k in model_state if k not in converted and not k.endswith(_OPTIONAL)]
    if not left:
        return  # a backbone-only model: nothing stays random
    prefixes = sorted({".".join(k.split(".")[:2]) for k in left})
    raise CheckpointMismatchError(
        f"MODEL.WEIGHTS is an ImageNet backbone ({kind}), but this model is used for prediction "
        f"or evaluation: {len(left)} of its weights (in {', '.join(prefixes[:6])}) would stay at "
        "random initialisation. Give a trained detector checkpoint (model_final.pth of your "
        "training, or a detectron2 model-zoo detector)."
    )


def box_predictor_classes(state: Mapping[str, torch.Tensor]) -> Optional[int]:
    """The class count of a checkpoint's box predictor (None when it has none)."""
    scores = state.get("roi_heads.box_predictor.cls_score.weight")
    return None if scores is None else int(scores.shape[0]) - 1  # + background


def _check_complete(converted: Mapping[str, torch.Tensor], model_state, what: str,
                    inference: bool = False) -> None:
    """Every model weight must come from the file; only the class count may differ, and only
    for training (fine-tuning), never for prediction or evaluation."""
    missing = [k for k in model_state if k not in converted and not k.endswith(_OPTIONAL)]
    if missing:
        prefixes = sorted({".".join(k.split(".")[:2]) for k in missing})
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS is {what}, but {len(missing)} of the model's weights are not in it "
            f"(in {', '.join(prefixes[:6])}): {_fmt(missing)}. Its keys look like "
            f"{_sample(converted)}: it was made for another architecture or depth."
        )
    wrong = [k for k in model_state if tuple(converted[k].shape) != tuple(model_state[k].shape)
             and not k.endswith(_OPTIONAL)]
    heads = [k for k in wrong if k.startswith("roi_heads.box_predictor.")]
    if len(heads) < len(wrong):
        details = [f"{k}: file {tuple(converted[k].shape)} vs model {tuple(model_state[k].shape)}"
                   for k in wrong if k not in heads]
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS is {what}, but weights have other shapes: {_fmt(details, 4)}."
        )
    if heads:
        file_classes, model_classes = box_predictor_classes(converted), box_predictor_classes(model_state)
        counts = f"the file's box predictor has {file_classes} classes, the model's {model_classes}"
        if inference:
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS is {what}, but {counts} (MODEL.ROI_HEADS.NUM_CLASSES): predicting "
                "or evaluating with it would leave the box predictor at random initialisation. Set "
                f"MODEL.ROI_HEADS.NUM_CLASSES {file_classes} (and the datasets of those classes), "
                "or give the checkpoint trained for this config."
            )
        # Fine-tuning on another number of classes: detectron2 re-initialises the predictor.
        logger.warning("Fine-tuning to another class count: %s; the box predictor (%s) is not "
                       "loaded and starts at random initialisation.", counts, _fmt(heads))


def _unrecognised_message(state, model_state) -> str:
    head_only = all(k.split(".")[0] in ("fc", "classifier", "head", "heads", "fc1000")
                    or k.startswith(("fc1000_", "pred_")) for k in state)
    if state and head_only:
        return (
            f"MODEL.WEIGHTS holds only a classifier head ({_sample(state)}), no backbone weights: "
            "use the full ImageNet model file."
        )
    return (
        f"MODEL.WEIGHTS is in no known format and shares no key with the model. Its keys look "
        f"like {_sample(state)}; the model's like {_sample(model_state)}. Known formats: "
        "torchvision ResNet/VGG16 .pth, torchvision://NAME, MSRA R-50/R-101.pkl, detectron2 "
        "detector checkpoints, and fpn_plugin's own checkpoints."
    )


def _fmt(keys, limit: int = 8) -> str:
    keys = list(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _sample(state) -> str:
    return _fmt(sorted(state), 5) if state else "(empty)"


def _log_unused(unused) -> None:
    if unused:
        logger.info("Weights in MODEL.WEIGHTS that this model does not use: %s", _fmt(unused))
