"""The fast path's ROI pooling: every box pooled once into NHWC rows, read by fc6 as they are.

detectron2's ``ROIPooler`` fills an NCHW zero tensor and copies each FPN level's ROIAlign
result into it, and its box head's flatten copies that again into fc6's (C, h, w) order. Here
each level's gather ROIAlign writes its boxes' rows of one (boxes, h * w, C) tensor in place
(:class:`GatherROIPooler`), and fc6's weight columns are reordered once to (h, w, C) so the
flatten is a view (:func:`read_rois_nhwc`): the same sums, without three passes over 1000
boxes' features.
"""
from typing import Optional

import torch
from torch import nn

from ...modeling.roi_align import _pair, pool_into
from ...modeling.roi_pooler import InPlaceROIPooler, boxes_by_level, pools_by_gather
from .wrappers import FastHead, _delegated_attribute

__all__ = ["GatherROIPooler", "NHWCFlatten", "read_rois_nhwc"]


class GatherROIPooler(nn.Module):
    """Stands in for a detectron2 ``ROIPooler`` whose levels are all :class:`~fpn_plugin.modeling.roi_align.GatherROIAlign`.

    Boxes go to levels by detectron2's own rule (``assign_boxes_to_levels``); the result is
    the original's, (M, C, h, w), in channels_last memory.

    Attributes:
        pooler: the original ``ROIPooler``; its attributes are answered by it.
        rows_dtype: None (the features' dtype), or the dtype the pooled values (computed in
            fp32) are rounded to and returned in: bf16 for a box head that runs in bf16,
            which would round its fp32 input the same way.
    """

    def __init__(self, pooler: nn.Module, rows_dtype: Optional[torch.dtype] = None):
        super().__init__()
        if not pools_by_gather(pooler):
            raise TypeError("GatherROIPooler needs a ROIPooler whose levels are all GatherROIAlign")
        self.pooler = pooler
        self.rows_dtype = rows_dtype

    def forward(self, x, box_lists):
        levels, pooler = self.pooler.level_poolers, self.pooler
        size = _pair(pooler.output_size)
        dtype, channels = self.rows_dtype or x[0].dtype, x[0].shape[1]
        boxes, level_rows = boxes_by_level(pooler, x, box_lists)
        if boxes is None:  # an empty batch, as detectron2's pooler answers it
            return x[0].new_zeros((0, channels, *size), dtype=dtype)
        compute = x[0].dtype if x[0].dtype in (torch.float32, torch.float64) else torch.float32
        out = x[0].new_empty(
            (len(boxes), size[0] * size[1], channels), dtype=self.rows_dtype or compute
        )
        with torch.autocast(x[0].device.type, enabled=False):
            for features, layer, rows in zip(x, levels, level_rows):
                if rows is None or len(rows):
                    pool_into(
                        out, rows, features.to(compute), boxes if rows is None else boxes[rows],
                        size, layer.spatial_scale, layer.sampling_ratio, layer.aligned,
                    )
        return out.reshape(len(boxes), *size, channels).permute(0, 3, 1, 2).to(dtype)

    def __getattr__(self, name: str):
        return _delegated_attribute(self, "pooler", name)


class NHWCFlatten(nn.Module):
    """(M, C, h, w) -> (M, h * w * C): a view of channels_last input (a copy otherwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(len(x), -1)


@torch.no_grad()
def read_rois_nhwc(model: nn.Module) -> list:
    """Pool with :class:`GatherROIPooler` and let a box head's fc6 read its rows as they are.

    Each ``ROIPooler`` of ``model`` whose levels are all :class:`~fpn_plugin.modeling.roi_align.GatherROIAlign` is replaced;
    a detectron2 ``FastRCNNConvFCHead`` without convs fed by the replaced box pooler gets an
    :class:`NHWCFlatten` and its fc6 columns permuted to (h, w, C) order, and where that head
    runs in bf16 (a :class:`FastHead`), the pooler writes bf16 rows. Returns the names of what
    changed.
    """
    from detectron2.modeling.poolers import ROIPooler

    changed = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (ROIPooler, InPlaceROIPooler) and pools_by_gather(child):
                setattr(parent, name, GatherROIPooler(child))
                changed.append(f"{parent_name}.{name}".lstrip("."))
    roi_heads = getattr(model, "roi_heads", None)
    wrapper = getattr(roi_heads, "box_head", None)
    head = wrapper.module if isinstance(wrapper, FastHead) else wrapper
    pooler = getattr(roi_heads, "box_pooler", None)
    if isinstance(pooler, GatherROIPooler) and _flatten_then_fc(head):
        if isinstance(wrapper, FastHead) and wrapper.bf16:
            # fc6 under bf16 autocast rounds its input to bf16: the pooler does it instead.
            pooler.rows_dtype = torch.bfloat16
            changed.append("roi_heads.box_pooler (bf16 rows)")
        height, width = _pair(pooler.output_size)
        bins = height * width
        fc6 = head.fc1
        if fc6.in_features % bins:
            raise ValueError(f"fc6 takes {fc6.in_features} inputs, not channels x {bins} bins")
        by_channel = fc6.weight.reshape(fc6.out_features, fc6.in_features // bins, bins)
        fc6.weight.copy_(by_channel.transpose(1, 2).reshape(fc6.out_features, -1).clone())
        head.flatten = NHWCFlatten()
        changed.append("roi_heads.box_head.flatten")
    return changed


def _flatten_then_fc(head) -> bool:
    """A detectron2 FastRCNNConvFCHead whose first layers are its flatten and fc6."""
    children = list(head.named_children()) if isinstance(head, nn.Sequential) else []
    return (
        len(children) >= 2 and children[0][0] == "flatten" and isinstance(children[0][1], nn.Flatten)
        and children[1][0] == "fc1" and isinstance(children[1][1], nn.Linear)
    )
