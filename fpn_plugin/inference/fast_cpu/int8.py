"""The RPN head's shared 3x3 conv + ReLU as an int8 convolution, calibrated on a few images.

That conv is a quarter of R50-FPN's multiply-adds at 800x1199. It runs through torch's quantized
CPU ops (fbgemm/oneDNN): weights per output channel, activations per tensor in 8 bits where the
CPU has AVX512-VNNI and in the 7-bit range that AVX2 without VNNI needs elsewhere
(:func:`fpn_plugin.precision.int8_activation_quant_max`), ranges from histograms of the
calibration images' features of all levels. Only the proposals change, a little; the backbone
and box head keep the fast path's precision. torch marks its quantized tensors deprecated
(torchao replaces them): this needs them.
"""
from typing import Sequence

import torch
from torch import nn

from .wrappers import _delegated_attribute

__all__ = ["Int8ConvReLU", "Int8RPNHead"]


class Int8ConvReLU(nn.Module):
    """``relu(conv(x))`` as an int8 convolution: fp32 in, fp32 out.

    The input is quantized per tensor (quint8; 7-bit range without VNNI, as fbgemm needs) with
    a scale calibrated beforehand, the weight per output channel (qint8, symmetric); the int8
    conv with its fused ReLU requantizes to the calibrated output scale, then it is dequantized.

    Args:
        conv: the fp32 convolution (its ReLU is the fused one).
        input_qparams: (scale, zero point) of the input, from an observer's
            ``calculate_qparams()``.
        output_qparams: (scale, zero point) of the ReLU's output.
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
        return self.quantized(x).dequantize()

    def quantized(self, x: torch.Tensor) -> torch.Tensor:
        """The output before its dequantization: a quint8 tensor."""
        q = torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, torch.quint8)
        return self.qconv(q)


class Int8RPNHead(nn.Module):
    """Stands in for a StandardRPNHead whose conv is an :class:`Int8ConvReLU`.

    The same outputs as the head's own forward, bit for bit: the 1x1 objectness and box-delta
    convs read the int8 conv's output dequantized a band of rows at a time (their result per
    pixel does not depend on the band), so no full fp32 copy of the largest level is made.

    Attributes:
        head: the wrapped RPN head; any attribute it has is answered by it.
    """

    band_bytes = 4 << 20  # fp32 bytes dequantized at a time: a band that stays in cache

    def __init__(self, head: nn.Module):
        super().__init__()
        if not isinstance(getattr(head, "conv", None), Int8ConvReLU):
            raise TypeError("Int8RPNHead needs an RPN head whose conv is an Int8ConvReLU")
        self.head = head

    def forward(self, features):
        head = self.head
        logits, deltas = [], []
        for x in features:
            t = head.conv.quantized(x)
            rows = max(1, self.band_bytes // (4 * t[:, :, :1].numel()))  # fp32 bytes of a row
            bands = [t[:, :, r:r + rows].dequantize() for r in range(0, t.shape[2], rows)]
            logits.append(torch.cat([head.objectness_logits(b) for b in bands], dim=2))
            deltas.append(torch.cat([head.anchor_deltas(b) for b in bands], dim=2))
        return logits, deltas

    def __getattr__(self, name: str):
        return _delegated_attribute(self, "head", name)


@torch.no_grad()
def quantize_rpn_conv(model: nn.Module, calibration: Sequence[dict]) -> None:
    """Replace the RPN head's shared 3x3 conv + ReLU by :class:`Int8ConvReLU` and the head by
    :class:`Int8RPNHead`, in place.

    Its input and output ranges are observed (histograms, as torch's x86 default) on the
    calibration images' features of every level, as the fast backbone computes them (in bf16
    where it runs in bf16; eager, so calibration compiles nothing).

    Args:
        model: a model whose backbone is already a ``FastBackbone``.
        calibration: detectron2 input dicts, as ``model`` takes them.

    Raises:
        ValueError: the RPN head is not detectron2's one-conv StandardRPNHead, or no
            calibration inputs.
    """
    from detectron2.modeling.proposal_generator.rpn import StandardRPNHead
    from torch.ao.quantization.observer import HistogramObserver

    from ...precision import int8_activation_quant_max

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
    quant_max = int8_activation_quant_max()
    observers = [HistogramObserver(quant_min=0, quant_max=quant_max) for _ in range(2)]
    for inputs in calibration:
        images = model.preprocess_image([inputs])
        # What the conv will see, bf16 rounding included; eager: nothing compiles here.
        features = model.backbone.eager_forward(images.tensor)
        for name in model.proposal_generator.in_features:
            x = features[name]
            observers[0](x)
            observers[1](conv(x))  # detectron2's Conv2d applies its ReLU
    head.conv = Int8ConvReLU(conv, *(o.calculate_qparams() for o in observers))
    if type(head).forward is StandardRPNHead.forward:  # what Int8RPNHead computes
        model.proposal_generator.rpn_head = Int8RPNHead(head)
