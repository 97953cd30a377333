"""The stand-ins the fast path puts into a model: a backbone and head modules run NHWC and/or bf16.

Both keep the interface of what they wrap (attributes are answered by it) and return fp32, so
the rest of the model (box decoding, softmax, NMS) computes as before.
"""
from typing import Dict, Optional

import torch
from torch import nn

__all__ = ["FastBackbone", "FastHead"]


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


_AUTOCAST_TO_BF16 = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


@torch.no_grad()
def store_weights_in_bf16(module: nn.Module) -> int:
    """Keep the weight and bias of each convolution and linear layer of ``module`` in bf16.

    For a module that runs under CPU bf16 autocast: autocast computes these layers with their
    parameters cast to bf16, and caches no cast of a parameter that does not require grad, so
    every forward would cast them all again (the box head's fc6 alone is 12.8 M weights).
    Stored in bf16 the cast is a no-op: the same arithmetic. Other parameters (norms left
    unfolded...) keep their dtype, which autocast may compute in. Returns the layers changed.
    """
    changed = 0
    for layer in module.modules():
        if isinstance(layer, _AUTOCAST_TO_BF16):
            for name in ("weight", "bias"):
                p = getattr(layer, name)
                if p is not None and p.dtype == torch.float32:
                    setattr(layer, name, nn.Parameter(p.bfloat16(), requires_grad=False))
            changed += 1
    return changed


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

    The body (the original backbone or its torch.compile form) gets the image batch in NHWC
    order and, with ``bf16``, runs under bf16 autocast (``optimize_for_cpu`` stores its
    convolution weights in bf16, :func:`store_weights_in_bf16`); the features come back as
    fp32 so the heads see what they always saw.

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
        return self._features(self.body, x)

    def eager_forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The features ``forward`` gives, from the eager backbone (nothing compiles)."""
        return self._features(self.original, x)

    def _features(self, body: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            features = body(x)
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
    CPU bf16 autocast, its convolution and linear weights stored in bf16
    (:func:`store_weights_in_bf16`), and its tensor outputs come back as fp32, so what follows
    (box deltas, softmax, NMS) computes in fp32 as before.

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
        if bf16:
            store_weights_in_bf16(module)

    def forward(self, x):
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.module(x)
        return _to_fp32(out)

    def __getattr__(self, name: str):
        return _delegated_attribute(self, "module", name)


def wrap_heads(model: nn.Module, channels_last: bool, bf16: bool, rpn_conv: bool) -> list:
    """Wrap the heads' heavy modules in :class:`FastHead`; returns the wrapped names.

    The RPN head's shared conv (``rpn_conv``: not when it is int8 or compiled), a standard ROI
    head's ``box_head`` (fc6/fc7 on every proposal, or its convs) and a C4 ROI head's ``res5``.
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
