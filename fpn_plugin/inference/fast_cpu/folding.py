"""Fold eval-mode norms into the convolutions before them.

In eval mode ``FrozenBatchNorm2d`` and ``BatchNorm2d`` with running statistics are a fixed
per-channel affine map, ``y = (x - mean) * w / sqrt(var + eps) + b``, so a convolution followed
by one is again a convolution with a rescaled weight and a new bias: one pass over the feature
map fewer per conv, the same outputs up to fp32 rounding.
"""
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from detectron2.layers import FrozenBatchNorm2d

__all__ = ["fold_conv_norm", "fold_batch_norms"]

# Norms that are a fixed per-channel affine map in eval mode, so foldable into a conv.
_FOLDABLE_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)


def _check_foldable(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Raise unless ``norm`` is an eval-mode affine norm over ``conv``'s outputs."""
    if not isinstance(norm, _FOLDABLE_NORMS):
        raise TypeError(
            f"cannot fold {type(norm).__name__}: only FrozenBatchNorm2d and BatchNorm2d are affine "
            "in eval mode"
        )
    if isinstance(norm, nn.BatchNorm2d):
        if norm.training:
            raise ValueError(
                f"{type(norm).__name__} is in training mode (batch statistics): call "
                "model.eval() first"
            )
        if not norm.track_running_stats or norm.running_mean is None:
            raise ValueError(f"{type(norm).__name__} without running statistics cannot be folded")
    if norm.running_mean.numel() != conv.out_channels:
        raise ValueError(
            f"the norm has {norm.running_mean.numel()} channels but the conv has "
            f"{conv.out_channels} outputs"
        )


@torch.no_grad()
def fold_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """Fold an eval-mode norm into the conv before it, in place; returns the conv.

    The new weight is ``W * scale`` per output channel and the new bias ``b * scale + shift``
    (``torch.nn.utils.fusion.fuse_conv_bn_weights``), computed in float64 and rounded once to
    the conv's dtype, so ``conv'(x)`` equals ``norm(conv(x))`` up to fp32 rounding of the
    convolution's sums. ``FrozenBatchNorm2d`` passes its buffers and its own ``eps``, which
    its forward adds to ``running_var`` exactly as ``BatchNorm2d`` does. The caller removes
    ``norm`` from the forward path.

    Args:
        conv: a ``torch.nn.Conv2d`` (or detectron2's ``Conv2d``), not grouped over the norm's
            channels in any other way than by output channel.
        norm: ``FrozenBatchNorm2d`` or an eval-mode ``BatchNorm2d`` over ``conv``'s outputs.

    Raises:
        TypeError: ``norm`` is neither of the two.
        ValueError: a ``BatchNorm2d`` in training mode or without running statistics, or a
            channel count other than ``conv``'s outputs.
    """
    _check_foldable(conv, norm)

    def fp64(t):
        return None if t is None else t.double()

    # fp64 throughout and one rounding at the end: fuse_conv_bn_weights computes in its inputs'
    # dtype, which in fp32 would round the scale and shift before they meet the weight.
    weight, bias = fuse_conv_bn_weights(
        fp64(conv.weight), fp64(conv.bias), fp64(norm.running_mean), fp64(norm.running_var),
        norm.eps, fp64(norm.weight), fp64(norm.bias),
    )
    dtype = conv.weight.dtype
    conv.weight.copy_(weight.to(dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
    else:
        conv.bias.copy_(bias.to(conv.bias.dtype))
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

    Args:
        module: an eval-mode module (a whole model, a backbone, a block).

    Returns:
        The number of norms folded.
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
