"""Weight files in the real formats, written from randomly initialised reference models."""
import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import fpn_plugin  # noqa: F401
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from fpn_plugin import add_fpn_plugin_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def randomise(model: nn.Module, seed: int = 0, weights: bool = True) -> nn.Module:
    """Give every parameter and every (Frozen)BatchNorm statistic a random, non-trivial value.

    Scales keep activations finite through deep networks: He-normal weights, small biases,
    BN scales around 1 and positive variances. ``weights=False`` keeps the (already random)
    initial weights of layers other than norms, which is faster for big networks.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                continue
            for name, p in module.named_parameters(recurse=False):
                if not weights and p.dim() > 1:
                    continue
                if p.dim() > 1:
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def torchvision_resnet(depth: int, seed: int = 0) -> nn.Module:
    # torchvision draws the conv and fc weights at random already; norms and biases get theirs here.
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return randomise(model, seed, weights=False).eval()


def save_torchvision_resnet(path: Path, depth: int, seed: int = 0) -> dict:
    state = torchvision_resnet(depth, seed).state_dict()
    torch.save(state, path)
    return state


def detectron2_builtin_cfg(config: str = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def detectron2_builtin_model(config: str = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
                             seed: int = 0) -> nn.Module:
    model = build_model(detectron2_builtin_cfg(config))
    randomise(model, seed)
    with torch.no_grad():
        # Keep activations in a realistic range for 0-255 pixels (std 1): else the RPN's deltas
        # explode and no proposal survives, and there would be no detections to compare.
        model.backbone.bottom_up.stem.conv1.weight.div_(64.0)
        model.proposal_generator.rpn_head.anchor_deltas.weight.mul_(0.1)
        model.roi_heads.box_predictor.cls_score.weight.mul_(0.5)
    return model.eval()


def save_detectron2_checkpoint(model: nn.Module, directory: Path):
    """Save as detectron2 does: ``{"model": state_dict}`` .pth and a model-zoo style .pkl."""
    state = model.state_dict()
    pth = directory / "model_final_random.pth"
    torch.save({"model": state, "iteration": 90000}, pth)
    pkl = directory / "model_final_random.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()},
                     "__author__": "Detectron2 Model Zoo"}, f)
    return pth, pkl


def save_msra_pkl(path: Path, tv_state: dict, with_blobs: bool = False) -> None:
    """Write a torchvision-named ResNet as detectron2's MSRA ``R-50.pkl`` (Caffe2 names, numpy).

    The MSRA files store each BatchNorm folded into a scale ``_bn_s`` and a shift ``_bn_b``.
    """
    blobs = {}
    for key, value in tv_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "fc":
            blobs[f"fc1000_{'w' if parts[1] == 'weight' else 'b'}"] = value.numpy()
            continue
        if parts[0] in ("conv1", "bn1"):
            name = "conv1" if parts[0] == "conv1" else "res_conv1_bn"
        else:
            stage, block = int(parts[0][-1]) + 1, parts[1]
            layer = ".".join(parts[2:-1])
            branch = {"conv1": "branch2a", "bn1": "branch2a_bn", "conv2": "branch2b",
                      "bn2": "branch2b_bn", "conv3": "branch2c", "bn3": "branch2c_bn",
                      "downsample.0": "branch1", "downsample.1": "branch1_bn"}[layer]
            name = f"res{stage}_{block}_{branch}"
        kind = parts[-1]
        if kind in ("running_mean", "running_var"):
            continue  # folded below
        if name.endswith("bn"):
            prefix = key[: -len(kind)]
            mean, var = tv_state[prefix + "running_mean"], tv_state[prefix + "running_var"]
            scale = tv_state[prefix + "weight"] / torch.sqrt(var + 1e-5)
            value = scale if kind == "weight" else tv_state[prefix + "bias"] - mean * scale
            blobs[f"{name}_{'s' if kind == 'weight' else 'b'}"] = value.numpy()
        else:
            blobs[f"{name}_w"] = value.numpy()
    blobs["res2_0_branch2a_w_momentum"] = np.zeros(1, dtype=np.float32)  # Caffe2 solver state
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs} if with_blobs else blobs, f)


def plugin_cfg(config: str, weights: str = "", **overrides):
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = "cpu"
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def photo(short_side: int = 320):
    """A real photo (BGR, float CHW) resized to the short side, or None without the data."""
    import cv2

    path = SHARED_DATA / "voc2007_subset" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg"
    if not path.is_file():
        return None
    img = cv2.imread(str(path))
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    return torch.as_tensor(img.transpose(2, 0, 1).astype("float32"))
