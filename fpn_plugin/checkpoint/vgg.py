"""VGG16 ImageNet weights (torchvision ``vgg16`` .pth, Caffe ``vgg16_caffe.pth``) for the plugin.

Both files hold the same state dict layout, torchvision's ``vgg16()``: ``features.N.weight/bias``
for the 13 convs and ``classifier.{0,3,6}.weight/bias`` for fc6, fc7 and ImageNet's fc8. They
differ in the pixels they were trained on (:data:`VGG16_PIXEL_FORMATS`), which no tensor
reveals, so the file name tells them apart (:func:`vgg16_weights_flavor`).
"""
import logging
import os
import re
from dataclasses import replace
from typing import Dict, List, Mapping

import numpy as np
import torch
from torch import nn

from ..modeling.vgg import VGG16, VGG16_CONV_INDICES, VGG16_FC_INDICES, VGG16BoxHead
from .pixel_format import CAFFE_VGG16_FORMAT, TORCHVISION_FORMAT, PixelFormat

__all__ = [
    "VGG16_PIXEL_FORMATS",
    "looks_like_vgg_state_dict",
    "vgg16_pixel_mismatches",
    "vgg16_to_plugin",
    "vgg16_weights_flavor",
]

logger = logging.getLogger(__name__)

# The pixels each flavour of VGG16 weights was trained on: torchvision's RGB ImageNet
# normalisation, or Caffe's BGR 0-255 minus the Caffe means (py-faster-rcnn and its ports).
_FORMATS = {"torchvision": TORCHVISION_FORMAT, "caffe": CAFFE_VGG16_FORMAT}
# The same as detectron2 config values (0-255 units), per flavour.
VGG16_PIXEL_FORMATS = {flavor: fmt.as_config() for flavor, fmt in _FORMATS.items()}

_KEY = re.compile(r"^(features|classifier)\.(\d+)\.(\w+)$")
# Conv count of torchvision's plain VGGs, to name the architecture of a wrong file.
_VGG_BY_CONV_COUNT = {8: "VGG11", 10: "VGG13", 13: "VGG16", 16: "VGG19"}
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_FIX = (
    "Use torchvision's plain vgg16 ImageNet weights (torchvision.models.VGG16_Weights."
    "IMAGENET1K_V1, 'torchvision://vgg16') or the Caffe vgg16_caffe.pth."
)


def looks_like_vgg_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when every key is torchvision-VGG-like (``features.N.*`` / ``classifier.N.*``).

    Also true for the files :func:`vgg16_to_plugin` rejects with an explanation (VGG19,
    vgg16_bn, classifier-only), so a checkpointer can route all of them to it.
    """
    return bool(state_dict) and all(isinstance(k, str) and _KEY.match(k) for k in state_dict)


def vgg16_weights_flavor(path: str) -> str:
    """``"caffe"`` for a Caffe VGG16 file (``caffe`` in its name, e.g. vgg16_caffe.pth), else
    ``"torchvision"``: the key of :data:`VGG16_PIXEL_FORMATS` its pixels follow."""
    return "caffe" if "caffe" in os.path.basename(str(path)).lower() else "torchvision"


def vgg16_pixel_format(path: str) -> PixelFormat:
    """The pixels the VGG16 weights file at ``path`` expects (its flavour told by its name)."""
    flavor = vgg16_weights_flavor(path)
    # No stride check: VGG16 has no Bottleneck blocks.
    return replace(_FORMATS[flavor], name=f"{flavor} VGG16 (told by the file name)", stride_in_1x1=None)


def vgg16_pixel_mismatches(cfg, flavor: str) -> List[str]:
    """Where ``cfg``'s pixel settings differ from those VGG16 weights of ``flavor`` expect.

    Returns:
        One line per mismatching key (``"MODEL.PIXEL_STD is [1.0, 1.0, 1.0], but torchvision
        VGG16 weights expect [58.395, 57.12, 57.375]"``); empty when all match.
    """
    if flavor not in VGG16_PIXEL_FORMATS:
        raise ValueError(
            f"Unknown VGG16 weights flavor {flavor!r}: use one of {list(VGG16_PIXEL_FORMATS)}."
        )
    problems = []
    for key, expected in VGG16_PIXEL_FORMATS[flavor].items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(expected, str):
            same = value == expected
        else:
            same = len(value) == len(expected) and np.allclose(value, expected, atol=1e-3)
        if not same:
            problems.append(f"{key} is {value!r}, but {flavor} VGG16 weights expect {expected!r}")
    return problems


def vgg16_to_plugin(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> Dict[str, torch.Tensor]:
    """Rename a torchvision-layout VGG16 state dict to ``model``'s parameter names.

    The conv layers go to every :class:`VGG16` in ``model`` (``backbone.`` for
    ``build_vgg16_backbone``, ``backbone.bottom_up.`` for VGG16-FPN), fc6/fc7 to its
    :class:`VGG16BoxHead` if it has one; ImageNet's fc8 (``classifier.6``) is never used.
    Conv layers after the model's last requested feature are not built and so not returned.

    Args:
        state_dict: torchvision ``vgg16().state_dict()`` layout (torchvision or Caffe weights).
        model: a model built by detectron2's ``build_model`` with a plugin VGG16 backbone.

    Returns:
        A state dict keyed like ``model.state_dict()``, for ``model.load_state_dict(...,
        strict=False)``: it holds every parameter of the model's VGG16 layers.

    Raises:
        ValueError: the file is not VGG16 (VGG11/13/19, a batch-norm VGG, another network, a
            classifier-only file), a tensor has the wrong shape, the model has no plugin VGG16,
            or the model's VGG16BoxHead needs fc6/fc7 that the file lacks.
    """
    weights = _check_vgg16_state_dict(state_dict)
    backbones = [name for name, m in model.named_modules() if isinstance(m, VGG16)]
    heads = [name for name, m in model.named_modules() if isinstance(m, VGG16BoxHead)]
    if not backbones:
        raise ValueError(
            f"The model ({type(model).__name__}) has no fpn_plugin VGG16 backbone, so VGG16 "
            "weights have nothing to initialise. Use MODEL.BACKBONE.NAME "
            "'build_vgg16_backbone' or 'build_vgg16_fpn_backbone' (configs/vgg16_voc07.yaml, "
            "configs/fpn_vgg16.yaml), or weights that match the model's backbone."
        )
    fc_keys = [f"classifier.{i}.{p}" for i in VGG16_FC_INDICES for p in ("weight", "bias")]
    if heads and any(k not in weights for k in fc_keys):
        raise ValueError(
            f"The model's box head VGG16BoxHead ({heads[0]}) is VGG16's fc6/fc7, but the weights "
            f"have no {', '.join(k for k in fc_keys if k not in weights)}: it would stay "
            "randomly initialised. Use a full vgg16 state dict (with its classifier), or "
            "another MODEL.ROI_BOX_HEAD.NAME (e.g. FastRCNNConvFCHead)."
        )
    targets = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    converted = {}
    for key, tensor in weights.items():
        if key.startswith("features."):
            prefixes = backbones
        elif key in fc_keys:
            prefixes = heads
        else:
            continue  # fc8: ImageNet's 1000-way classifier
        for prefix in prefixes:
            name = f"{prefix}.{key}" if prefix else key
            if name not in targets:
                continue  # a conv after the model's last requested feature, which is not built
            if tuple(tensor.shape) != targets[name]:
                raise ValueError(
                    f"VGG16 weight {key} has shape {tuple(tensor.shape)}, but the model's {name} "
                    f"has shape {targets[name]}. The file is not torchvision's VGG16 layout."
                )
            converted[name] = tensor
    if not heads:
        logger.info("VGG16 weights: fc6/fc7 unused, the model's box head is not VGG16BoxHead.")
    return converted


def _check_vgg16_state_dict(state_dict: Mapping[str, object]) -> Dict[str, torch.Tensor]:
    """Raise a ValueError naming what is not VGG16 in ``state_dict``; return it as tensors."""
    if not isinstance(state_dict, Mapping) or not state_dict:
        got = "an empty one" if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ValueError(f"VGG16 weights must be a non-empty state dict (a Mapping), got {got}.")
    foreign = [k for k in state_dict if not (isinstance(k, str) and _KEY.match(k))]
    if foreign:
        raise ValueError(
            f"Not a torchvision-layout VGG state dict: {len(foreign)} of {len(state_dict)} keys "
            f"are not 'features.N.*' / 'classifier.N.*', e.g. {foreign[:3]}. If the file wraps "
            "the weights (a 'state_dict' or 'model' entry), pass that entry. " + _FIX
        )
    weights = {k: torch.as_tensor(v) for k, v in state_dict.items()}
    bn = sorted(k for k in weights if k.split(".")[-1] in _BN_BUFFERS)
    if bn:
        raise ValueError(
            f"These are weights of a VGG with batch norm (vgg16_bn or similar: {bn[0]}, ...), "
            "but fpn_plugin's VGG16 is the plain VGG16 of the Faster R-CNN paper, without batch "
            "norm. " + _FIX
        )
    conv_keys = [k for k, v in weights.items() if k.startswith("features.") and v.dim() == 4]
    convs = sorted({int(k.split(".")[1]) for k in conv_keys})
    if not convs:
        kept = sorted(weights)
        only = "only the classifier " if all(k.startswith("classifier.") for k in kept) else ""
        raise ValueError(
            f"These VGG weights hold {only}({', '.join(kept[:6])}) and no conv layer "
            "(features.N.weight), so the VGG16 backbone would stay randomly initialised. " + _FIX
        )
    if tuple(convs) != VGG16_CONV_INDICES:
        arch = _VGG_BY_CONV_COUNT.get(len(convs), "not VGG16")
        raise ValueError(
            f"These weights have {len(convs)} conv layers (features indices {convs}): that is "
            f"{arch}, but fpn_plugin's VGG16 has 13 at {list(VGG16_CONV_INDICES)}. " + _FIX
        )
    expected = {f"features.{i}.{p}" for i in VGG16_CONV_INDICES for p in ("weight", "bias")}
    odd = sorted(set(k for k in weights if k.startswith("features.")) ^ expected)
    if odd:
        raise ValueError(
            "VGG16 conv weights do not match torchvision's vgg16: unexpected or missing "
            f"{odd[:6]}. " + _FIX
        )
    return weights
