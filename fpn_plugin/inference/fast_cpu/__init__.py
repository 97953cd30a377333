"""A CPU fast path for inference: turn an eval-mode detectron2 model into a faster equivalent.

:func:`optimize_for_cpu` applies, each switchable:

- ``fold_bn``: every eval-mode norm that directly follows a convolution (detectron2's
  ``FrozenBatchNorm2d``, ``BatchNorm2d`` with running statistics) is folded into that
  convolution's weight and bias (:func:`fold_batch_norms`). Exact up to fp32 rounding, and one
  pass over the feature map fewer per conv.
- ``channels_last``: the backbone's 4-D weights in NHWC order. oneDNN's convolutions run on
  NHWC natively; the NCHW path reorders every activation before and after each conv.
- ``gather_roi_align``: the ROI heads' ROIAlign as one gather of feature rows
  (:mod:`fpn_plugin.modeling.roi_align`), which reads the NHWC features in place; torchvision's
  kernel first copies each level to NCHW and walks boxes and channels one at a time. Same result
  up to fp32 rounding. Each ``ROIPooler`` then writes every box once into NHWC rows, which a
  box head's fc6 reads as they are, its weight columns reordered once
  (:mod:`~.pooling`: two copies of all boxes' features fewer); for a bf16 box head the rows
  are written in bf16, rounded as its fc6 would round them.
- ``rpn_topk``: detectron2's RPN picks each level's best anchors by ``topk`` before decoding
  their boxes (:class:`~.proposals.TopKRPN`), instead of decoding every anchor and sorting all
  scores (detectron2 0.6). The same proposals.
- ``compile`` (off by default): the backbone and RPN head compiled by ``torch.compile``
  (TorchInductor with its ``freezing``: weights become constants, so the convolutions run as
  oneDNN primitives with prepacked weights and the ReLUs and residual adds fused in). Same
  detections up to fp32 rounding. ``"static"`` compiles per padded input size (each new size a
  recompile; after torch's recompile limit, 8, it runs eager), ``"dynamic"`` once for symbolic
  sizes, ``True`` is torch's default: static for the first size, one symbolic recompile when
  another size comes. Compilation happens at the first forward and needs a C++ compiler. With
  ``bf16`` the autocast regions are compiled in (the same bf16 arithmetic, weights cast and
  prepacked once).
- ``int8_rpn`` (off by default; give it a few calibration images): the RPN head's shared 3x3
  conv + ReLU as an int8 convolution (:class:`~.int8.Int8ConvReLU`), with 8-bit activations
  where the CPU has AVX512-VNNI and 7-bit ones elsewhere; the 1x1 convs after it read its
  output dequantized a band of rows at a time (:class:`~.int8.Int8RPNHead`). Only the
  proposals change, a little;
  how much depends on the model. Combines with ``bf16`` (the rest of the heavy parts in bf16).
- ``bf16`` (off by default): the backbone, and with ``bf16_heads`` (default) the heads' heavy
  parts (:class:`FastHead`), under bf16 autocast (compiled with ``compile``), their convolution
  and linear weights stored in bf16 so that autocast casts none of them at each forward.
  Fast only on CPUs with native bf16 (avx512_bf16, AMX). ``"auto"`` follows
  :func:`fpn_plugin.precision.choose_precision` (bf16 only where it is native); ``True``
  forces it, with the policy's warning where it is emulated. Its detections differ from fp32
  by bf16 rounding.

The README's "CPU fast path" gives the measured speed of each and how many of the fp32
detections they keep; ``benchmarks/bench_cpu_inference.py`` measures them on your CPU and model
(``--weights``).
"""
from .folding import fold_batch_norms, fold_conv_norm  # noqa: F401
from .int8 import Int8ConvReLU, Int8RPNHead  # noqa: F401
from .optimize import optimize_for_cpu  # noqa: F401
from .pooling import GatherROIPooler  # noqa: F401
from .proposals import TopKRPN  # noqa: F401
from .wrappers import FastBackbone, FastHead  # noqa: F401

__all__ = ["optimize_for_cpu", "fold_batch_norms"]
