"""``optimize_for_cpu``: the fast path's options checked and applied to a copy of the model.

The steps themselves live beside this module: norm folding (``folding``), the NHWC/bf16
stand-ins (``wrappers``) and the int8 RPN conv (``int8``); ``torch.compile`` is applied here.
"""
import copy
import logging
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ...modeling.roi_align import use_gather_roi_align
from ...precision import choose_precision
from .folding import fold_batch_norms
from .int8 import quantize_rpn_conv
from .pooling import read_rois_nhwc
from .proposals import select_before_decoding
from .wrappers import FastBackbone, store_weights_in_bf16, wrap_heads

__all__ = ["optimize_for_cpu"]

logger = logging.getLogger(__name__)

_COMPILE_DYNAMIC = {True: None, "static": False, "dynamic": True}  # -> torch.compile's dynamic


def _resolve_compile(compile: Union[bool, str]) -> bool:
    if compile is not False and (
        not isinstance(compile, (bool, str)) or compile not in _COMPILE_DYNAMIC
    ):
        raise ValueError(f"compile must be False, True, 'static' or 'dynamic', got {compile!r}")
    return compile is not False


def _compile(module: nn.Module, dynamic: Optional[bool]) -> nn.Module:
    """``torch.compile`` with inductor's freezing (applied when the first call runs without
    grad, as inference does): weights become constants, so oneDNN prepacks them and fuses the
    ReLUs and residual adds into the convolutions."""
    return torch.compile(module, dynamic=dynamic, options={"freezing": True})


def _resolve_bf16(bf16: Union[bool, str]) -> bool:
    if bf16 == "auto":
        return choose_precision("auto", "cpu", setting="optimize_for_cpu(bf16)").name == "bf16"
    if not isinstance(bf16, bool):
        raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    if bf16:
        choose_precision("bf16", "cpu", setting="optimize_for_cpu(bf16)")  # warns where emulated
    return bf16


def optimize_for_cpu(
    model: nn.Module,
    *,
    bf16: Union[bool, str] = False,
    fold_bn: bool = True,
    channels_last: bool = True,
    compile: Union[bool, str] = False,
    int8_rpn: Optional[Sequence[dict]] = None,
    bf16_heads: bool = True,
    gather_roi_align: bool = True,
    rpn_topk: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """The CPU fast form of an eval-mode detectron2 meta-architecture (``GeneralizedRCNN``...).

    Args:
        model: a model in eval mode, on the CPU, with a ``backbone`` attribute.
        bf16: False (default: fp32, the plain model's detections up to fp32 rounding), True,
            or "auto" (bf16 only on CPUs with native bf16); see the package doc.
        fold_bn: fold eval-mode norms into the convolutions before them (whole model).
        channels_last: run the backbone in NHWC order.
        compile: ``torch.compile`` the backbone and RPN head with inductor's freezing (with
            bf16, their autocast regions are compiled in: the same bf16 arithmetic with
            prepacked bf16 weights; compiles at the first forward): False; True (torch's
            default: static for the first padded size, one recompile with symbolic sizes once
            another size comes); ``"static"`` (one compilation per padded size, the fastest
            code); ``"dynamic"`` (symbolic sizes from the start). See the package doc.
        int8_rpn: calibration inputs (detectron2 input dicts, as ``model`` takes them; a few
            images like the ones to predict) to run the RPN head's 3x3 conv in int8; None
            (default) keeps it in the fast path's precision. Its activations use 8 bits with AVX512-VNNI, 7 without
            (:func:`~fpn_plugin.precision.int8_activation_quant_max`). With ``compile`` the
            RPN head stays eager. Changes the detections slightly: see the package doc.
        rpn_topk: detectron2's ``RPN`` becomes a :class:`~.proposals.TopKRPN`, which picks
            each level's best anchors by ``topk`` before decoding their boxes (the same
            proposals).
        bf16_heads: with bf16, also run the heads' heavy parts in bf16 (the RPN head's shared
            conv, the box head, C4's res5; see :class:`~.wrappers.FastHead`); False keeps
            them fp32.
        gather_roi_align: compute the ROI heads' ROIAlign by
            :class:`~fpn_plugin.modeling.roi_align.GatherROIAlign` (the same result up to fp32
            rounding, read from the NHWC features in place) instead of torchvision's kernel
            (a model built with ``MODEL.PLUGIN_ROI_ALIGN`` "auto" on CPU has it already), with
            each ROI pooler writing NHWC rows that fc6 reads in place (``pooling``).
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        The same kind of model; its ``backbone`` is a :class:`~.wrappers.FastBackbone`. In
        fp32 its outputs equal the original's up to fp32 rounding (boxes within ~1e-3 px on
        the tests' models).

    Raises:
        ValueError: a model in training mode, without a backbone, off the CPU or already
            optimized; an unknown ``bf16`` or ``compile`` value; an int8 RPN without
            calibration inputs or on a model without a one-conv RPN head.
    """
    if model.training:
        raise ValueError(
            "optimize_for_cpu needs an eval-mode model: call model.eval() first (training needs "
            "batch statistics)"
        )
    if not hasattr(model, "backbone"):
        raise ValueError(
            "optimize_for_cpu expects a detectron2 meta-architecture with a .backbone, got "
            f"{type(model).__name__}"
        )
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(
            f"optimize_for_cpu is for models on the CPU; this one is on {sorted(devices)}"
        )
    use_bf16 = _resolve_bf16(bf16)
    use_compile = _resolve_compile(compile)
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model.backbone, FastBackbone):
        raise ValueError("this model is already optimized (its backbone is a FastBackbone)")
    for p in model.parameters():
        p.requires_grad_(False)  # inference only; folding and inductor's freezing assume it
    if fold_bn:
        n = fold_batch_norms(model)
        logger.info("fast_cpu: folded %d norms into convolutions", n)
    backbone = model.backbone
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    if use_bf16:
        store_weights_in_bf16(backbone)
    body = _compile(backbone, _COMPILE_DYNAMIC[compile]) if use_compile else None
    model.backbone = FastBackbone(backbone, body, channels_last, use_bf16)
    rpn_head = getattr(getattr(model, "proposal_generator", None), "rpn_head", None)
    if rpn_head is not None:
        if channels_last:
            rpn_head.to(memory_format=torch.channels_last)
        if int8_rpn is not None:
            quantize_rpn_conv(model, int8_rpn)
    elif int8_rpn is not None:
        raise ValueError("int8_rpn needs a model with an RPN (proposal_generator.rpn_head)")
    wrapped = wrap_heads(model, channels_last, use_bf16 and bf16_heads, rpn_conv=int8_rpn is None)
    if use_compile and rpn_head is not None and int8_rpn is None:
        # After wrap_heads: with bf16 the compiled graph holds the conv's autocast region.
        model.proposal_generator.rpn_head = _compile(rpn_head, _COMPILE_DYNAMIC[compile])
    if rpn_topk and select_before_decoding(model):
        logger.info("fast_cpu: the RPN decodes only each level's top-k anchors")
    if gather_roi_align:
        n = use_gather_roi_align(model)
        logger.info("fast_cpu: %d ROIAlign layers replaced by the gather ROIAlign", n)
        logger.info("fast_cpu: ROI features kept NHWC in %s", ", ".join(read_rois_nhwc(model)) or "-")
    if wrapped:
        mode = "bf16" if use_bf16 and bf16_heads else "NHWC"
        logger.info("fast_cpu: %s in %s", mode, ", ".join(wrapped))
    return model
