"""A CPU fast path for inference: turn an eval-mode detectron2 model into a faster equivalent.

:func:`optimize_for_cpu` applies, each switchable:

- ``fold_bn``: every eval-mode norm that directly follows a convolution (detectron2's
  ``FrozenBatchNorm2d``, ``BatchNorm2d`` with running statistics) is folded into that
  convolution's weight and bias: ``y = (conv(x) - mean) * g / sqrt(var + eps) + b`` is again a
  convolution. Exact up to fp32 rounding (see :func:`fold_conv_norm`), and one pass over the
  feature map fewer per conv.
- ``channels_last``: the backbone's 4-D weights in NHWC order. oneDNN's convolutions run on
  NHWC natively; the NCHW path reorders every activation before and after each conv.
- ``jit`` (off by default): the backbone and RPN head traced and frozen by TorchScript
  (``torch.jit.freeze``). They are pure tensor functions of the padded image batch, so one
  trace serves every image size; the rest (Instances, NMS, data-dependent shapes) stays eager.
  On the 2-core AVX2 CPU this was measured on it gave nothing over fold + NHWC (3.21 vs 3.17
  s/image, also with ``torch.jit.optimize_for_inference``), so it is not on by default.
- ``compile`` (off by default): the backbone and RPN head compiled by ``torch.compile``
  (TorchInductor with its ``freezing``: weights become constants, so the convolutions run as
  oneDNN primitives with prepacked weights and the ReLUs and residual adds fused in). Same
  detections up to fp32 rounding. ``"static"`` compiles per padded input size (each new size a
  recompile; after torch's recompile limit, 8, it runs eager), ``"dynamic"`` once for symbolic
  sizes, ``True`` is torch's default: static for the first size, one symbolic recompile when
  another size comes. Compilation happens at the first forward and needs a C++ compiler.
  Measured on the 2-core AVX2 CPU (R50-FPN, 800x1199, interleaved medians): on an idle
  machine 2.98 and 2.90 s/image against 3.08 and 2.94 for fold + NHWC (0.78x and 0.80x vs
  0.80x and 0.81x of the builtin fp32 model), the same for ``"dynamic"``; with another process
  loading the cores, 0.62-0.64x (static) and 0.68x (dynamic) vs 0.75-0.77x. The first forward
  took 11-29 s (fresh inductor cache; an eager one 3 s), each new size with ``"static"``
  ~10-15 s more. A few percent for up to half a minute of compiling and a C++ compiler at run
  time: not on by default.
- ``int8_rpn`` (off by default; give it a few calibration images): the RPN head's shared 3x3
  conv + ReLU, a quarter of R50-FPN's multiply-adds at 800x1199, as an int8 convolution
  (fbgemm/oneDNN through torch's quantized CPU ops; weights per channel, activations per
  tensor in the 7-bit range that AVX2 without VNNI needs, ranges from histograms of the
  calibration images' features of all levels). Only the proposals change, a little; the
  backbone and box head stay fp32. Measured on the 2-core AVX2 CPU (R50-FPN, 800x1199,
  interleaved medians, idle machine): 2.73 s/image against 2.94 for fold + NHWC and 3.63 for
  the builtin fp32 model (0.75x vs 0.81x; 0.74x with ``compile``), calibration ~1 s; 97.5 % of
  the fp32 detections matched (79 of 81 on 80 facemask validation images, calibrated on 8
  training images; a benchmark-trained R18-FPN). How well it matches depends on the model:
  measure it on yours (``benchmarks/bench_cpu_inference.py --weights``).
  torch marks its quantized tensors deprecated (torchao replaces them): this needs them.
  Quantizing the whole backbone and FPN too (FX graph mode, x86 backend) measured 0.62x
  against 0.83x for fold + NHWC, but matched only 85 % of the fp32 detections (69 of 81 on 80
  facemask images; 73 % with 8-bit activations, saturating without VNNI), so it is not here.
- ``bf16`` (off by default): the backbone, and with ``bf16_heads`` (default) the heads' heavy
  parts (:class:`FastHead`), under bf16 autocast, eager (not with ``jit`` or ``compile``).
  Fast only on CPUs with native bf16 (avx512_bf16, AMX). ``"auto"`` follows
  :func:`fpn_plugin.precision.choose_precision` (bf16 only where it is native); ``True``
  forces it, with the policy's warning where it is emulated. Its detections differ from fp32
  by bf16 rounding: measure the match rate (``benchmarks/bench_cpu_inference.py``).
"""
import copy
import logging
import warnings
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d

from ..precision import choose_precision

__all__ = [
    "optimize_for_cpu", "fold_conv_norm", "fold_batch_norms", "FastBackbone",
    "Int8ConvReLU", "FastHead",
]

logger = logging.getLogger(__name__)

# Norms that are a fixed per-channel affine map in eval mode, so foldable into a conv.
_FOLDABLE_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)


def _norm_scale_shift(norm: nn.Module):
    """(scale, shift) with ``norm(x) == x * scale + shift`` per channel, in fp64 for exactness."""
    if isinstance(norm, nn.BatchNorm2d):
        if norm.training:
            raise ValueError(
                f"{type(norm).__name__} is in training mode (batch statistics): call "
                "model.eval() first"
            )
        if not norm.track_running_stats or norm.running_mean is None:
            raise ValueError(f"{type(norm).__name__} without running statistics cannot be folded")
    channels = norm.running_mean.numel()
    weight = norm.weight if norm.weight is not None else torch.ones(channels)
    bias = norm.bias if norm.bias is not None else torch.zeros(channels)
    scale = weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    shift = bias.double() - norm.running_mean.double() * scale
    return scale, shift


@torch.no_grad()
def fold_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """Fold an eval-mode norm into the conv before it, in place; returns the conv.

    The new weight is ``W * scale`` per output channel and the new bias ``b * scale + shift``,
    computed in float64 and rounded once to the conv's dtype, so ``conv'(x)`` equals
    ``norm(conv(x))`` up to fp32 rounding of the convolution's sums. The caller removes
    ``norm`` from the forward path.

    Args:
        conv: a ``torch.nn.Conv2d`` (or detectron2's ``Conv2d``), not grouped over the norm's
            channels in any other way than by output channel.
        norm: ``FrozenBatchNorm2d`` or an eval-mode ``BatchNorm2d`` over ``conv``'s outputs.
    """
    if not isinstance(norm, _FOLDABLE_NORMS):
        raise TypeError(
            f"cannot fold {type(norm).__name__}: only FrozenBatchNorm2d and BatchNorm2d are affine "
            "in eval mode"
        )
    if norm.running_mean.numel() != conv.out_channels:
        raise ValueError(
            f"the norm has {norm.running_mean.numel()} channels but the conv has "
            f"{conv.out_channels} outputs"
        )
    scale, shift = _norm_scale_shift(norm)
    dtype = conv.weight.dtype
    conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
    old_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
    new_bias = (old_bias * scale + shift).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias, requires_grad=False)
    else:
        conv.bias.copy_(new_bias)
    return conv


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every conv-then-norm pair of ``module`` in place; returns how many were folded.

    Recognised pairs, the ones detectron2 and this plugin build:

    - detectron2's ``Conv2d`` with a ``norm`` attribute (its ResNet, FPN, heads): the norm is
      folded and set to None.
    - a ``Conv2d`` directly followed by a norm inside an ``nn.Sequential`` (downsample
      branches): the norm becomes ``nn.Identity``.
    - torchvision-style blocks with attributes ``convN`` and ``bnN`` (the plugin ResNet):
      ``bnN`` becomes ``nn.Identity``.
    """
    folded = 0
    for parent in list(module.modules()):
        own_norm = getattr(parent, "norm", None)
        if isinstance(parent, nn.Conv2d) and isinstance(own_norm, _FOLDABLE_NORMS):
            fold_conv_norm(parent, own_norm)
            parent.norm = None
            folded += 1
            continue
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for first, second in zip(names, names[1:]):
                conv, norm = parent._modules[first], parent._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, _FOLDABLE_NORMS):
                    fold_conv_norm(conv, norm)
                    parent._modules[second] = nn.Identity()
                    folded += 1
        for name, child in list(parent.named_children()):
            if name.startswith("conv") and isinstance(child, nn.Conv2d):
                norm_name = "bn" + name[len("conv"):]
                norm = getattr(parent, norm_name, None)
                if isinstance(norm, _FOLDABLE_NORMS):
                    fold_conv_norm(child, norm)
                    setattr(parent, norm_name, nn.Identity())
                    folded += 1
    return folded


def _delegated_attribute(wrapper: nn.Module, inner: str, name: str):
    """``wrapper.name``: its own (parameters, submodules...) or else its submodule ``inner``'s."""
    try:
        return nn.Module.__getattr__(wrapper, name)
    except AttributeError:
        # While unpickling or copying, the inner module may not be there yet.
        module = wrapper.__dict__.get("_modules", {}).get(inner)
        if module is None:
            raise
        return getattr(module, name)


def _to_fp32(output):
    """``output`` (a tensor, or a list/tuple/dict of them) with its bf16 tensors as fp32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.dtype == torch.bfloat16 else output
    if isinstance(output, dict):
        return {k: _to_fp32(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_to_fp32(v) for v in output)
    return output


class FastBackbone(nn.Module):
    """Stands in for a detectron2 backbone: same interface, a faster body.

    The body (the original backbone, its frozen TorchScript trace or its torch.compile form)
    gets the image batch in NHWC order and, with ``bf16``, runs under bf16 autocast; the
    features come back as fp32 so the heads see what they always saw.

    Attributes:
        original: the (folded, NHWC) eager backbone; ``output_shape``, ``size_divisibility``
            and any other attribute are answered by it.
    """

    def __init__(
        self, original: nn.Module, body: Optional[nn.Module], channels_last: bool, bf16: bool
    ):
        super().__init__()
        self.original = original
        self.body = body if body is not None else original
        self.channels_last = channels_last
        self.bf16 = bf16

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            features = self.body(x)
        return _to_fp32(dict(features))

    def output_shape(self):
        return self.original.output_shape()

    @property
    def size_divisibility(self) -> int:
        return self.original.size_divisibility

    @property
    def padding_constraints(self):
        return getattr(self.original, "padding_constraints", {})

    def __getattr__(self, name: str):
        # Anything else a backbone answers (e.g. _out_features) comes from the original.
        return _delegated_attribute(self, "original", name)


class FastHead(nn.Module):
    """Runs a head's heavy part (RPN conv, box head, C4's res5) in NHWC and/or bf16 autocast.

    4-D tensor inputs are made NHWC with ``channels_last``; with ``bf16`` the module runs under
    CPU bf16 autocast and its tensor outputs come back as fp32, so what follows (box deltas,
    softmax, NMS) computes in fp32 as before.

    Attributes:
        module: the wrapped head module; any attribute it has is answered by it.
    """

    def __init__(self, module: nn.Module, channels_last: bool, bf16: bool):
        super().__init__()
        self.module = module
        self.channels_last = channels_last
        self.bf16 = bf16
        if channels_last:
            module.to(memory_format=torch.channels_last)

    def forward(self, x):
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.module(x)
        return _to_fp32(out)

    def __getattr__(self, name: str):
        return _delegated_attribute(self, "module", name)


def _fast_heads(model: nn.Module, channels_last: bool, bf16: bool, rpn_conv: bool) -> list:
    """Wrap the heads' heavy modules in :class:`FastHead`; returns the wrapped names.

    The RPN head's shared conv (``rpn_conv``: not when it is int8), a standard ROI head's
    ``box_head`` (fc6/fc7 on every proposal, or its convs) and a C4 ROI head's ``res5``.
    Only bf16 changes these modules' arithmetic; NHWC alone is for the convolutions (res5).
    """
    wrapped = []
    rpn_head = getattr(getattr(model, "proposal_generator", None), "rpn_head", None)
    if rpn_conv and bf16 and isinstance(getattr(rpn_head, "conv", None), nn.Module):
        rpn_head.conv = FastHead(rpn_head.conv, channels_last, bf16)
        wrapped.append("proposal_generator.rpn_head.conv")
    roi_heads = getattr(model, "roi_heads", None)
    for name, needs_nhwc in (("box_head", False), ("res5", True)):
        head = getattr(roi_heads, name, None)
        if isinstance(head, nn.Module) and (bf16 or (channels_last and needs_nhwc)):
            setattr(roi_heads, name, FastHead(head, channels_last and needs_nhwc, bf16))
            wrapped.append(f"roi_heads.{name}")
    return wrapped


def _trace_backbone(backbone: nn.Module, channels_last: bool) -> torch.jit.ScriptModule:
    """The backbone traced on a dummy batch and frozen; valid for any size divisible as padded."""
    div = max(int(backbone.size_divisibility or 1), 32)
    example = torch.zeros(1, 3, 2 * div, 3 * div)
    if channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.compile/export; the jit option is kept
        # for CPUs where its freeze + oneDNN fusion measures faster (no compile step at load).
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(backbone, example, strict=False, check_trace=False)
        return torch.jit.freeze(traced)


def _trace_rpn_head(model: nn.Module, channels_last: bool) -> torch.jit.ScriptModule:
    """The RPN head (convs over a list of feature maps) traced on the backbone's dummy features."""
    div = max(int(model.backbone.size_divisibility or 1), 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        features = model.backbone(torch.zeros(1, 3, 2 * div, 3 * div))
        example = [features[f] for f in model.proposal_generator.in_features]
        head = model.proposal_generator.rpn_head
        traced = torch.jit.trace(head, (example,), strict=False, check_trace=False)
        return torch.jit.freeze(traced)


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


class Int8ConvReLU(nn.Module):
    """``relu(conv(x))`` as an int8 convolution: fp32 in, fp32 out.

    The input is quantized per tensor (quint8, 7-bit range as fbgemm needs without VNNI) with
    a scale calibrated beforehand, the weight per output channel (qint8, symmetric); the int8
    conv with its fused ReLU requantizes to the calibrated output scale, then it is dequantized.
    """

    def __init__(self, conv: nn.Conv2d, input_qparams, output_qparams):
        super().__init__()
        from torch.ao.nn.intrinsic.quantized import ConvReLU2d

        from torch.ao.quantization.observer import PerChannelMinMaxObserver

        weight = conv.weight.detach().float()
        observer = PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        )
        observer(weight)
        scales, zero_points = observer.calculate_qparams()
        qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        self.qconv = ConvReLU2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        )
        bias = conv.bias.detach().float() if conv.bias is not None else None
        self.qconv.set_weight_bias(qweight, bias)
        self.qconv.scale, self.qconv.zero_point = float(output_qparams[0]), int(output_qparams[1])
        self.input_scale, self.input_zero_point = float(input_qparams[0]), int(input_qparams[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, torch.quint8)
        return self.qconv(q).dequantize()


@torch.no_grad()
def _quantize_rpn_conv(model: nn.Module, calibration: Sequence[dict]) -> None:
    """Replace the RPN head's shared 3x3 conv + ReLU by :class:`Int8ConvReLU`, its input and
    output ranges observed (histograms, as torch's x86 default) on the calibration images'
    features of every level."""
    from torch.ao.quantization.observer import HistogramObserver

    head = model.proposal_generator.rpn_head
    conv = getattr(head, "conv", None)
    if not (isinstance(conv, nn.Conv2d) and isinstance(getattr(conv, "activation", None), nn.ReLU)
            and getattr(conv, "norm", None) is None):
        raise ValueError(
            "int8_rpn needs detectron2's StandardRPNHead with one conv + ReLU (RPN.CONV_DIMS "
            f"[-1]), got {type(head).__name__} with conv {type(conv).__name__}"
        )
    if not calibration:
        raise ValueError("int8_rpn needs calibration inputs (a list of detectron2 input dicts)")
    observers = [HistogramObserver(quant_min=0, quant_max=127) for _ in range(2)]
    for inputs in calibration:
        images = model.preprocess_image([inputs])
        features = model.backbone.original(images.tensor)  # eager: nothing compiles here
        for name in model.proposal_generator.in_features:
            x = features[name]
            observers[0](x)
            observers[1](conv(x))  # detectron2's Conv2d applies its ReLU
    head.conv = Int8ConvReLU(conv, *(o.calculate_qparams() for o in observers))


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
    jit: bool = False,
    compile: Union[bool, str] = False,
    int8_rpn: Optional[Sequence[dict]] = None,
    bf16_heads: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """The CPU fast form of an eval-mode detectron2 meta-architecture (``GeneralizedRCNN``...).

    Args:
        model: a model in eval mode, on the CPU, with a ``backbone`` attribute.
        bf16: False (default: fp32, the plain model's detections up to fp32 rounding), True,
            or "auto" (bf16 only on CPUs with native bf16); see the module doc.
        fold_bn: fold eval-mode norms into the convolutions before them (whole model).
        channels_last: run the backbone in NHWC order.
        jit: trace and freeze the backbone and RPN head with TorchScript (fp32 only: with
            bf16 it is an error). Measured no faster, so off.
        compile: ``torch.compile`` the backbone and RPN head with inductor's freezing (fp32
            only, like ``jit``; compiles at the first forward): False; True (torch's default:
            static for the first padded size, one recompile with symbolic sizes once another
            size comes); ``"static"`` (one compilation per padded size, the fastest code);
            ``"dynamic"`` (symbolic sizes from the start). See the module doc.
        int8_rpn: calibration inputs (detectron2 input dicts, as ``model`` takes them; a few
            images like the ones to predict) to run the RPN head's 3x3 conv in int8; None
            (default) keeps it fp32. Not with ``jit``; with ``compile`` the RPN head stays
            eager. Changes the detections slightly: see the module doc.
        bf16_heads: with bf16, also run the heads' heavy parts in bf16 (the RPN head's shared
            conv, the box head, C4's res5; see :class:`FastHead`); False keeps them fp32.
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        The same kind of model; its ``backbone`` is a :class:`FastBackbone`. In fp32 its
        outputs equal the original's up to fp32 rounding (boxes within ~1e-3 px on the tests'
        models).
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
    if jit and use_compile:
        raise ValueError("jit and compile are alternatives: choose one")
    if use_bf16 and (jit or use_compile):
        # The trace and the compiled graph are fp32; under autocast they would silently not run.
        raise ValueError(
            f"jit and compile run the backbone in fp32 only, but bf16 is on (bf16={bf16!r}): "
            "choose bf16=False for jit/compile, or drop jit/compile for bf16"
        )
    if jit and int8_rpn is not None:
        raise ValueError("int8_rpn does not work with jit")
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model.backbone, FastBackbone):
        raise ValueError("this model is already optimized (its backbone is a FastBackbone)")
    for p in model.parameters():
        p.requires_grad_(False)  # inference only; folding and freezing assume it
    if fold_bn:
        n = fold_batch_norms(model)
        logger.info("fast_cpu: folded %d norms into convolutions", n)
    backbone = model.backbone
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    body = None
    if jit:
        body = _trace_backbone(backbone, channels_last)
    elif use_compile:
        body = _compile(backbone, _COMPILE_DYNAMIC[compile])
    model.backbone = FastBackbone(backbone, body, channels_last, use_bf16)
    rpn_head = getattr(getattr(model, "proposal_generator", None), "rpn_head", None)
    if rpn_head is not None:
        if channels_last:
            rpn_head.to(memory_format=torch.channels_last)
        if int8_rpn is not None:
            _quantize_rpn_conv(model, int8_rpn)
        elif jit:
            model.proposal_generator.rpn_head = _trace_rpn_head(model, channels_last)
        elif use_compile:
            model.proposal_generator.rpn_head = _compile(rpn_head, _COMPILE_DYNAMIC[compile])
    elif int8_rpn is not None:
        raise ValueError("int8_rpn needs a model with an RPN (proposal_generator.rpn_head)")
    wrapped = _fast_heads(
        model, channels_last, use_bf16 and bf16_heads,
        rpn_conv=int8_rpn is None and not jit and not use_compile,
    )
    if wrapped:
        mode = "bf16" if use_bf16 and bf16_heads else "NHWC"
        logger.info("fast_cpu: %s in %s", mode, ", ".join(wrapped))
    return model
