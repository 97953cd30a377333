"""Refuse detectron2 ``MODEL.RESNETS`` settings that the plugin ResNet would silently ignore."""
from .resnet_blocks import RESNET_SPECS, resnet_out_channels

__all__ = ["check_resnets_keys"]

# detectron2's MODEL.RESNETS keys that the plugin ResNet reads from MODEL.PLUGIN_RESNET instead.
_SHARED_KEYS = ("DEPTH", "NORM", "STRIDE_IN_1X1", "OUT_FEATURES")
# detectron2's MODEL.RESNETS keys for variants the plugin ResNet does not build, with the value
# that means "plain ResNet" (RES2_OUT_CHANNELS follows the depth: checked separately).
_UNSUPPORTED_KEYS = {
    "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64, "STEM_OUT_CHANNELS": 64, "RES5_DILATION": 1,
    "DEFORM_ON_PER_STAGE": [False, False, False, False],
}


def check_resnets_keys(cfg) -> None:
    """Refuse ``MODEL.RESNETS`` settings that the plugin ResNet would silently ignore.

    The plugin backbones read ``MODEL.PLUGIN_RESNET``. A config that sets, say,
    ``MODEL.RESNETS.DEPTH: 101`` (as detectron2's configs do) but leaves
    ``MODEL.PLUGIN_RESNET.DEPTH`` at 50 would otherwise train a ResNet-50. A RESNETS key left
    at detectron2's default, or equal to its PLUGIN_RESNET twin, is fine.

    Raises:
        ValueError: naming the key, both values and the fix.
    """
    from detectron2.config import get_cfg

    default, ours, theirs = get_cfg().MODEL.RESNETS, cfg.MODEL.PLUGIN_RESNET, cfg.MODEL.RESNETS
    problems = []
    for key in _SHARED_KEYS:
        value = theirs.get(key)
        if _same(value, default.get(key)) or _same(value, ours.get(key)):
            continue
        problems.append(
            f"MODEL.RESNETS.{key} is {value!r} but the plugin ResNet reads MODEL.PLUGIN_RESNET.{key} "
            f"({ours.get(key)!r}): set MODEL.PLUGIN_RESNET.{key} {value!r}, or remove "
            f"MODEL.RESNETS.{key}"
        )
    for key, plain in _UNSUPPORTED_KEYS.items():
        value = theirs.get(key)
        if value is not None and not _same(value, plain):
            problems.append(
                f"MODEL.RESNETS.{key} is {value!r}: the plugin ResNet builds plain ResNets only "
                f"({key} {plain!r}); use detectron2's own ResNet backbones for this variant"
            )
    res2 = theirs.get("RES2_OUT_CHANNELS")
    if ours.DEPTH in RESNET_SPECS and res2 not in (default.RES2_OUT_CHANNELS, resnet_out_channels(ours.DEPTH, "res2")):
        problems.append(
            f"MODEL.RESNETS.RES2_OUT_CHANNELS is {res2} but a plugin ResNet-{ours.DEPTH} has "
            f"{resnet_out_channels(ours.DEPTH, 'res2')}: remove the key"
        )
    if problems:
        raise ValueError("The config's MODEL.RESNETS disagrees with the plugin ResNet:\n- " + "\n- ".join(problems))


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b
