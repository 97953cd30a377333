"""Recognise ResNet weight files and convert them to the plugin ResNet's parameter names.

Three layouts are understood, each converted into the keys of a given model (so that the
conversion follows where the model keeps its ResNet: ``backbone.bottom_up.`` in an FPN,
``backbone.`` plus the C4 head's ``roi_heads.res5.``):

- torchvision ImageNet classifiers (``conv1.weight``, ``layer1.0.conv1.weight``, ``fc.weight``);
- the MSRA ImageNet models of detectron2's model zoo (``R-50.pkl``: Caffe2 names such as
  ``res2_0_branch2a_w``, ``res_conv1_bn_s``), converted to torchvision names first;
- detectron2 detectors (``backbone.bottom_up.res2.0.conv1.norm.weight``, ``...stem.conv1...``).
"""
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..modeling.resnet import PluginResNet
from ..modeling.resnet_blocks import RESNET_SPECS, ResNetStage
from ..modeling.resnet_names import detectron2_block_key, detectron2_resnet_key
from .mismatch import CheckpointMismatchError, format_keys

__all__ = [
    "find_resnet_modules",
    "is_caffe2_resnet",
    "caffe2_resnet_to_torchvision",
    "is_torchvision_resnet",
    "torchvision_resnet_depth",
    "torchvision_resnet_to_plugin",
    "is_detectron2_resnet",
    "detectron2_resnet_to_plugin",
]


def find_resnet_modules(model: nn.Module) -> Tuple[Dict[str, PluginResNet], Dict[str, ResNetStage]]:
    """The plugin ResNets of a model, and the ResNet stages that live outside of them.

    Returns:
        (resnets, stages): dicts from a state-dict prefix (``"backbone.bottom_up."``) to the
        module; ``stages`` are e.g. the C4 ROI head's ``layer4`` (``"roi_heads.res5."``).
    """
    resnets, stages = {}, {}
    for name, module in model.named_modules():
        prefix = name + "." if name else ""
        if isinstance(module, PluginResNet):
            resnets[prefix] = module
        elif isinstance(module, ResNetStage) and not any(prefix.startswith(p) for p in resnets):
            stages[prefix] = module
    return resnets, stages


# ---------------------------------------------------------------------------------------------
# MSRA / Caffe2 (detectron2 model zoo ImageNetPretrained/MSRA/R-50.pkl)
# ---------------------------------------------------------------------------------------------
_C2_BRANCH = {"branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3"}
_C2_BLOCK = re.compile(r"^res(\d)_(\d+)_(branch1|branch2[abc])_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_C2_STEM = {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight", "res_conv1_bn_b": "bn1.bias",
            "res_conv1_bn_rm": "bn1.running_mean", "res_conv1_bn_riv": "bn1.running_var"}
_C2_SUFFIX = {"bn_s": "weight", "bn_b": "bias", "bn_rm": "running_mean", "bn_riv": "running_var"}
# The ImageNet classifier, and Caffe2 bookkeeping blobs that carry no weights.
_C2_IGNORED = re.compile(r"^(fc1000_[wb]|pred_[wb]|.*_momentum|lr|weight_order|model_iter)$")


def is_caffe2_resnet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "conv1_w" in state_dict and any(_C2_BLOCK.match(k) for k in state_dict)


def caffe2_resnet_to_torchvision(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename an MSRA/Caffe2 ResNet (``res2_0_branch2a_w``) to torchvision names (``layer1.0.conv1.weight``).

    The MSRA ImageNet models fold each BatchNorm into a scale ``_bn_s`` and a shift ``_bn_b``;
    the running mean and variance become 0 and 1, which is what detectron2 does with these files.
    The mapping is detectron2's ``convert_basic_c2_names`` (``branch1`` -> shortcut,
    ``branch2a/b/c`` -> ``conv1/2/3``), written towards torchvision's names.

    Raises:
        CheckpointMismatchError: a key is neither a ResNet weight nor the ImageNet classifier.
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        if key in _C2_STEM:
            out[_C2_STEM[key]] = value
            continue
        m = _C2_BLOCK.match(key)
        if m is None:
            if not _C2_IGNORED.match(key):
                unknown.append(key)
            continue
        stage, block, branch, kind = m.groups()
        if branch == "branch1":
            name = "downsample.0.weight" if kind == "w" else f"downsample.1.{_C2_SUFFIX[kind]}"
        else:
            conv = _C2_BRANCH[branch]
            name = f"{conv}.weight" if kind == "w" else f"bn{conv[-1]}.{_C2_SUFFIX[kind]}"
        out[f"layer{int(stage) - 1}.{block}.{name}"] = value
    if unknown:
        raise CheckpointMismatchError(
            f"This Caffe2 file is not an MSRA ImageNet ResNet: it has {len(unknown)} weights that "
            f"are not ResNet blobs ({format_keys(sorted(unknown))}). Detectron1 detection models are not supported; "
            "use a detectron2 checkpoint or an ImageNet model."
        )
    for key in [k for k in out if k.endswith(".weight") and (".bn" in k or k.startswith("bn")
                                                              or ".downsample.1." in k)]:
        # Folded BatchNorm: identity statistics, as detectron2's FrozenBatchNorm2d assumes.
        base = key[: -len("weight")]
        out.setdefault(base + "running_mean", torch.zeros_like(out[key]))
        out.setdefault(base + "running_var", torch.ones_like(out[key]))
    return out


# ---------------------------------------------------------------------------------------------
# torchvision ImageNet classifiers
# ---------------------------------------------------------------------------------------------
def is_torchvision_resnet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict


def _count_blocks(keys, pattern: str) -> Dict[int, int]:
    counts: Dict[int, int] = {}
    rx = re.compile(pattern)
    for k in keys:
        m = rx.match(k)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            counts[stage] = max(counts.get(stage, 0), block + 1)
    return counts


def _depth_from_counts(bottleneck: bool, counts: Mapping[int, int]) -> Optional[int]:
    for depth, (block, spec) in RESNET_SPECS.items():
        if (block == "Bottleneck") == bottleneck and all(
            counts.get(i + 1, spec[i]) == spec[i] for i in range(4)
        ) and counts:
            return depth
    return None


def _describe(bottleneck: bool, counts: Mapping[int, int]) -> str:
    blocks = ", ".join(f"layer{i}: {counts[i]}" for i in sorted(counts))
    depth = _depth_from_counts(bottleneck, counts)
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    return (f"ResNet-{depth}" if depth else "an unknown ResNet") + f" ({kind} blocks, {blocks})"


def torchvision_resnet_depth(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Optional[int], str]:
    """(depth or None, a description such as "ResNet-50 (Bottleneck blocks, layer1: 3, ...)")."""
    bottleneck = "layer1.0.conv3.weight" in state_dict
    counts = _count_blocks(state_dict, r"^layer(\d)\.(\d+)\.")
    return _depth_from_counts(bottleneck, counts), _describe(bottleneck, counts)


def _model_description(resnets, stages) -> str:
    parts = [f"ResNet-{m.depth} at '{p}'" for p, m in resnets.items()]
    parts += [f"{m.torchvision_name} ({len(m)} {type(m[0]).__name__} blocks) at '{p}'"
              for p, m in stages.items()]
    return ", ".join(parts)


def torchvision_resnet_to_plugin(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, source: str = "torchvision"
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Place a torchvision-named ResNet state dict into the model's plugin ResNet modules.

    Args:
        state_dict: torchvision names (``conv1.weight``, ``layer3.5.bn2.running_var``, ``fc.*``).
        model: the model to load into (its plugin ResNets and standalone stages are found).
        source: what the file is, for error messages ("torchvision", "MSRA").

    Returns:
        (converted, unused): the state dict keyed like ``model.state_dict()``, covering every
        parameter and buffer of the model's ResNet modules, and the file's keys not used.

    Raises:
        CheckpointMismatchError: the model has no plugin ResNet, the depths differ, or a
            weight of the model's ResNet is missing or has another shape in the file.
    """
    resnets, stages = find_resnet_modules(model)
    depth, description = torchvision_resnet_depth(state_dict)
    if not resnets and not stages:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS is a {source} {description} ImageNet file, but the model has no "
            f"plugin ResNet (its backbone is {type(getattr(model, 'backbone', model)).__name__}). "
            "Use a config whose MODEL.BACKBONE.NAME is build_plugin_resnet_backbone or "
            "build_plugin_resnet_fpn_backbone, or weights made for this backbone."
        )
    for prefix, module in resnets.items():
        if module.depth != depth:
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS is a {source} {description}, but the model's plugin ResNet at "
                f"'{prefix}' is ResNet-{module.depth} (MODEL.PLUGIN_RESNET.DEPTH). Set DEPTH to "
                "the file's depth or use the file of the model's depth."
            )
    targets: Dict[str, str] = {}  # torchvision key prefix -> model key prefix
    for prefix, module in resnets.items():
        targets[f"{prefix}conv1."] = "conv1."
        targets[f"{prefix}bn1."] = "bn1."
        for name in module.stage_names:
            index = int(name[-1]) - 1
            targets[f"{prefix}layer{index}."] = f"layer{index}."
    for prefix, stage in stages.items():
        targets[prefix] = stage.torchvision_name + "."

    model_state = model.state_dict()
    converted, unused = {}, []
    for key in state_dict:
        placed = False
        for model_prefix, file_prefix in targets.items():
            if key.startswith(file_prefix):
                target = model_prefix + key[len(file_prefix):]
                if target in model_state:
                    converted[target] = state_dict[key]
                    placed = True
        if not placed:
            unused.append(key)

    expected = [
        k for k in model_state
        if any(k.startswith(p) for p in targets) and not k.endswith("num_batches_tracked")
    ]
    missing = [k for k in expected if k not in converted]
    if missing:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS ({source} {description}) lacks {len(missing)} weights of the model's "
            f"ResNet ({_model_description(resnets, stages)}): {format_keys(sorted(missing))}. The file was made "
            "for another architecture or depth."
        )
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
             for k, v in converted.items() if tuple(v.shape) != tuple(model_state[k].shape)]
    if wrong:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS ({source} {description}) has weights whose shapes differ from the "
            f"model's ({_model_description(resnets, stages)}): {format_keys(sorted(wrong), 4)}."
        )
    # BatchNorm statistics have no place in a GroupNorm model; the affine part still loads.
    unused = [k for k in unused if not k.endswith("num_batches_tracked")]
    return converted, unused


# ---------------------------------------------------------------------------------------------
# detectron2 detectors (model_final_*.pkl / .pth of the model zoo, or trained by detectron2)
# ---------------------------------------------------------------------------------------------
_D2_STEM = re.compile(r"(^|\.)stem\.conv1\.weight$")
_D2_BLOCK_NORM = re.compile(r"(^|\.)res[2-5]\.\d+\.(conv\d|shortcut)\.norm\.")


def is_detectron2_resnet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(_D2_STEM.search(k) or _D2_BLOCK_NORM.search(k) for k in state_dict)


def detectron2_resnet_to_plugin(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> Dict[str, torch.Tensor]:
    """Rename a detectron2 detector's ResNet keys to the plugin ResNet's, where the model has one.

    detectron2's ResNet inside ``backbone.bottom_up.`` (FPN) or ``backbone.`` (C4) uses
    ``stem.conv1(.norm)``, ``res2``..``res5`` and ``convN.norm``/``shortcut(.norm)``; the C4
    head's ``roi_heads.res5.`` uses the block names. All other keys (FPN, RPN, box head) keep
    their names: the plugin model builds them with detectron2's own classes.

    Raises:
        CheckpointMismatchError: the depth of the file's ResNet differs from the model's.
    """
    resnets, stages = find_resnet_modules(model)
    file_prefixes = sorted({m.group(1) for m in map(re.compile(r"^(.*)stem\.conv1\.weight$").match,
                                                     state_dict) if m})
    if resnets and file_prefixes and file_prefixes != sorted(resnets):
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS is a detectron2 checkpoint whose ResNet is at "
            f"{', '.join(repr(p) for p in file_prefixes)}, but the model's is at "
            f"{', '.join(repr(p) for p in resnets)}: the architectures differ ('backbone.' is a "
            "C4 model, 'backbone.bottom_up.' an FPN). Use the config of the checkpoint's "
            "architecture (configs/r*_c4_*.yaml or configs/fpn_r*.yaml)."
        )
    out = {}
    for key, value in state_dict.items():
        new = key
        for prefix in resnets:
            if key.startswith(prefix):
                new = prefix + detectron2_resnet_key(key[len(prefix):])
        for prefix in stages:
            if key.startswith(prefix):
                m = re.match(r"^(\d+)\.(.*)$", key[len(prefix):])
                if m:
                    new = f"{prefix}{m.group(1)}.{detectron2_block_key(m.group(2))}"
        out[new] = value

    for prefix, module in resnets.items():
        bottleneck = any(k.startswith(prefix) and ".conv3." in k for k in state_dict)
        counts = _count_blocks(state_dict, "^" + re.escape(prefix) + r"res(\d)\.(\d+)\.")
        counts = {stage - 1: n for stage, n in counts.items()}  # res2 -> layer1
        if counts and _depth_from_counts(bottleneck, counts) != module.depth:
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS is a detectron2 checkpoint whose ResNet at '{prefix}' is "
                f"{_describe(bottleneck, counts)}, but the model's is ResNet-{module.depth} "
                "(MODEL.PLUGIN_RESNET.DEPTH). Set DEPTH to the checkpoint's depth."
            )
    return out
