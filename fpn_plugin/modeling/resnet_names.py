"""detectron2's ResNet parameter names, mapped to the plugin ResNet's torchvision names.

detectron2 calls the stem ``stem.conv1`` with ``stem.conv1.norm`` and a block's norms
``convN.norm`` and ``shortcut.norm``; the plugin ResNet has torchvision's ``conv1``/``bn1``,
``layerN.i.bnN`` and ``downsample.0/.1``. The ``load_state_dict`` pre-hooks here rename a
detectron2 state dict's keys on the way in, so that a detectron2 detector checkpoint loads into
the plugin model with plain ``model.load_state_dict`` too (strictly, as torch checks every key).
"""
import re

__all__ = ["detectron2_resnet_key", "detectron2_block_key"]


def detectron2_block_key(rest: str) -> str:
    """A key inside a detectron2 ResNet block, in the plugin's names.

    ``conv2.norm.bias`` -> ``bn2.bias``, ``shortcut.norm.x`` -> ``downsample.1.x``,
    ``shortcut.weight`` -> ``downsample.0.weight``; other keys are returned unchanged.
    """
    rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", rest)
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    return re.sub(r"^shortcut\.", "downsample.0.", rest)


def detectron2_resnet_key(rest: str) -> str:
    """A key of detectron2's ResNet (``stem.conv1.norm.weight``, ``res2.0.conv1.weight``) in
    :class:`~fpn_plugin.modeling.resnet.PluginResNet`'s names (``bn1.weight``,
    ``layer1.0.conv1.weight``); keys that are already the plugin's are returned unchanged."""
    if rest.startswith("stem.conv1.norm."):
        return "bn1." + rest[len("stem.conv1.norm."):]
    if rest.startswith("stem.conv1."):
        return "conv1." + rest[len("stem.conv1."):]
    m = re.match(r"^res([2-5])\.(\d+)\.(.*)$", rest)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.{detectron2_block_key(m.group(3))}"
    return rest


def _rename_keys(state_dict, prefix: str, rename) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + rename(key[len(prefix):])
        if new != key:
            state_dict[new] = state_dict.pop(key)


def load_detectron2_resnet_names(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook of a whole ResNet: detectron2's keys below ``prefix``."""
    _rename_keys(state_dict, prefix, detectron2_resnet_key)


def load_detectron2_block_names(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook of one stage: detectron2's ``<block>.<key>`` below ``prefix``."""
    _rename_keys(state_dict, prefix, lambda rest: re.sub(
        r"^(\d+)\.(.*)$", lambda m: f"{m.group(1)}.{detectron2_block_key(m.group(2))}", rest))
