"""torchvision's Faster R-CNN checkpoints (``fasterrcnn_resnet50_fpn``, ``..._v2``) in detectron2 names.

torchvision's detector and the plugin's R-FPN (``configs/tv_fasterrcnn_*.yaml``) are the same
network under other names, with two layout differences in the box predictor: torchvision's
class 0 is the background (detectron2's is the last), and a COCO model has 91 rows, one per
COCO category id 1..90 with 10 ids never used, where detectron2 has the 80 used ones in
order. Both file generations are read: torchvision >= 0.13 (``inner_blocks.0.0.weight``,
``rpn.head.conv.0.0.weight``) and the older one the published v1 file has
(``inner_blocks.0.weight``, ``rpn.head.conv.weight``).
"""
import re
from typing import Dict, List, Mapping, Tuple

import torch

from .mismatch import CheckpointMismatchError
from .resnet_formats import torchvision_resnet_to_plugin

__all__ = ["is_torchvision_detector", "torchvision_detector_to_detectron2", "coco_category_ids"]

_BODY = "backbone.body."
_PREDICTOR = "roi_heads.box_predictor."
_COCO_ROWS = 91  # background + COCO category ids 1..90


def is_torchvision_detector(state: Mapping[str, torch.Tensor]) -> bool:
    return f"{_BODY}conv1.weight" in state and f"{_PREDICTOR}cls_score.weight" in state


def coco_category_ids() -> List[int]:
    """COCO's category id of each of detectron2's 80 contiguous classes, in order."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [c["id"] for c in COCO_CATEGORIES if c["isthing"]]


def _conv_norm(rest: str, target: str) -> str:
    """``0.weight`` (the conv) / ``1.running_mean`` (its norm) / ``weight`` (old files), in
    detectron2's Conv2d names (``weight``, ``norm.running_mean``)."""
    index, _, param = rest.partition(".")
    if not index.isdigit():  # old layout: the conv itself
        return f"{target}.{rest}"
    return f"{target}.{param}" if index == "0" else f"{target}.norm.{param}"


def _rename(key: str, rpn_convs: int) -> str:
    """The detectron2 name of a torchvision key outside the ResNet and the box predictor."""
    m = re.match(r"backbone\.fpn\.(inner|layer)_blocks\.(\d)\.(.+)$", key)
    if m:
        kind = "fpn_lateral" if m.group(1) == "inner" else "fpn_output"
        return _conv_norm(m.group(3), f"backbone.{kind}{int(m.group(2)) + 2}")
    m = re.match(r"rpn\.head\.conv\.(?:(\d)\.0\.)?(weight|bias)$", key)
    if m:
        conv = "conv" if rpn_convs == 1 else f"conv.conv{m.group(1) or 0}"
        return f"proposal_generator.rpn_head.{conv}.{m.group(2)}"
    m = re.match(r"rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)$", key)
    if m:
        name = "objectness_logits" if m.group(1) == "cls_logits" else "anchor_deltas"
        return f"proposal_generator.rpn_head.{name}.{m.group(2)}"
    m = re.match(r"roi_heads\.box_head\.fc([67])\.(weight|bias)$", key)  # v1: TwoMLPHead
    if m:
        return f"roi_heads.box_head.fc{int(m.group(1)) - 5}.{m.group(2)}"
    m = re.match(r"roi_heads\.box_head\.(\d+)\.(.+)$", key)  # v2: convs, Flatten, Linear, ReLU
    if m:
        index, rest = int(m.group(1)), m.group(2)
        if rest.startswith(("0.", "1.")):  # a Conv2dNormActivation
            return _conv_norm(rest, f"roi_heads.box_head.conv{index + 1}")
        return f"roi_heads.box_head.__linear{index}.{rest}"  # numbered below
    return key


def _number_linears(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # v2's Linear layers sit after the convs and a Flatten: the k-th one is detectron2's fc<k>.
    indices = sorted({int(k.split("__linear")[1].split(".")[0]) for k in state if "__linear" in k})
    out = {}
    for key, value in state.items():
        if "__linear" in key:
            index = int(key.split("__linear")[1].split(".")[0])
            key = f"roi_heads.box_head.fc{indices.index(index) + 1}.{key.rsplit('.', 1)[1]}"
        out[key] = value
    return out


def _predictor(state: Mapping[str, torch.Tensor], model_classes: int) -> Tuple[Dict[str, torch.Tensor], str]:
    """The box predictor with detectron2's row order: classes, then background (scores) and
    classes only (deltas); COCO's 91 rows become the 80 used ones."""
    scores_w, scores_b = state[f"{_PREDICTOR}cls_score.weight"], state[f"{_PREDICTOR}cls_score.bias"]
    deltas_w, deltas_b = state[f"{_PREDICTOR}bbox_pred.weight"], state[f"{_PREDICTOR}bbox_pred.bias"]
    rows = scores_w.shape[0]
    if rows == _COCO_ROWS and model_classes == 80:
        ids, how = coco_category_ids(), "COCO's 91 category rows mapped to detectron2's 80 classes"
    else:  # contiguous classes 1..K (a model trained on one's own data), or a mismatch to report
        ids, how = list(range(1, rows)), f"{rows - 1} classes, background moved last"
    index = torch.tensor(ids)
    box_rows = (index[:, None] * 4 + torch.arange(4)).reshape(-1)
    return {
        f"{_PREDICTOR}cls_score.weight": torch.cat([scores_w[index], scores_w[:1]]),
        f"{_PREDICTOR}cls_score.bias": torch.cat([scores_b[index], scores_b[:1]]),
        f"{_PREDICTOR}bbox_pred.weight": deltas_w[box_rows],
        f"{_PREDICTOR}bbox_pred.bias": deltas_b[box_rows],
    }, how


def torchvision_detector_to_detectron2(state: Mapping[str, torch.Tensor], model) -> Tuple[Dict[str, torch.Tensor], str]:
    """Convert a torchvision Faster R-CNN ``state_dict`` into ``model``'s parameter names.

    Returns:
        (converted, how the classes were mapped). Completeness is checked by the caller.

    Raises:
        CheckpointMismatchError: the model has no plugin ResNet of the file's depth.
    """
    model_state = model.state_dict()
    body = {k[len(_BODY):]: v for k, v in state.items() if k.startswith(_BODY)}
    converted, _ = torchvision_resnet_to_plugin(body, model, source="torchvision detector's")
    rpn_convs = len({k.split(".")[3] for k in state if re.match(r"rpn\.head\.conv\.\d+\.0\.weight$", k)}) or 1
    rest = _number_linears({_rename(k, rpn_convs): v for k, v in state.items()
                            if not k.startswith((_BODY, _PREDICTOR))})
    # BatchNorm's counter has no place in a FrozenBN model (it is a buffer of no effect there).
    converted.update({k: v for k, v in rest.items() if k in model_state or not k.endswith("num_batches_tracked")})
    classes = model_state[f"{_PREDICTOR}cls_score.weight"].shape[0] - 1 \
        if f"{_PREDICTOR}cls_score.weight" in model_state else 0
    predictor, how = _predictor(state, classes)
    converted.update(predictor)
    extra = sorted(k for k in converted if k not in model_state)
    if extra:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS is a torchvision Faster R-CNN, but {len(extra)} of its weights have no "
            f"place in this model ({', '.join(extra[:6])}): its box head or RPN is another one. "
            "Use configs/tv_fasterrcnn_r50_fpn.yaml for fasterrcnn_resnet50_fpn files and "
            "configs/tv_fasterrcnn_r50_fpn_v2.yaml for fasterrcnn_resnet50_fpn_v2 ones."
        )
    return converted, how
