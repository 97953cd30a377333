"""detectron2's ``ROIPooler`` with gather ROIAligns that write into its output in place.

detectron2's pooler allocates its (M, C, h, w) output, then pools each FPN level's boxes into
a new tensor and copies that in. On CPU, in an R50-FPN training step, P2's result was the
step's memory peak (48 MB for a batch of 2 at 384x512, on top of the output). Here each level
writes its boxes' rows of the output directly (:func:`gather_roi_align_levels`), and the
backward reads each level's rows of the output's gradient in slices of channels.
"""
import torch
from detectron2.modeling.poolers import (
    ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format,
)

from .roi_align import GatherROIAlign, _pair, gather_roi_align_levels

__all__ = ["InPlaceROIPooler", "boxes_by_level", "pools_by_gather"]


def pools_by_gather(pooler) -> bool:
    """True for a pooler with levels, all of them :class:`GatherROIAlign`."""
    levels = list(getattr(pooler, "level_poolers", ()))
    return bool(levels) and all(type(p) is GatherROIAlign for p in levels)


def boxes_by_level(pooler: ROIPooler, x, box_lists):
    """What a ROIPooler with gather levels pools: (boxes as (K, 5), per level the rows of
    those boxes it pools, or None for all of them where there is one level), the boxes
    assigned by detectron2's own rule; (None, None) for an empty batch.

    Raises:
        ValueError: ``x`` is not one map per level, or ``box_lists`` not one list per image.
    """
    levels = pooler.level_poolers
    if len(x) != len(levels) or len(box_lists) != x[0].size(0):
        raise ValueError(
            f"ROIPooler: {len(levels)} levels and a batch of {x[0].size(0)} expected, got "
            f"{len(x)} feature maps and {len(box_lists)} box lists"
        )
    if not box_lists:
        return None, None
    boxes = convert_boxes_to_pooler_format(box_lists)
    if len(levels) == 1:
        return boxes, [None]
    assignments = assign_boxes_to_levels(
        box_lists, pooler.min_level, pooler.max_level, pooler.canonical_box_size,
        pooler.canonical_level,
    )
    return boxes, [torch.nonzero(assignments == level).squeeze(1) for level in range(len(levels))]


class InPlaceROIPooler(ROIPooler):
    """A ``ROIPooler`` whose levels are all :class:`GatherROIAlign`: the same result (the
    gather's), boxes assigned to levels by detectron2's own rule, no per-level copy."""

    @classmethod
    def like(cls, pooler: ROIPooler) -> "InPlaceROIPooler":
        """The same pooler (output size, levels, canonical box) pooling in place."""
        if not pools_by_gather(pooler):
            raise TypeError("InPlaceROIPooler needs a ROIPooler whose levels are all GatherROIAlign")
        levels = pooler.level_poolers
        new = cls(
            pooler.output_size, [p.spatial_scale for p in levels], levels[0].sampling_ratio,
            "ROIAlignV2" if levels[0].aligned else "ROIAlign",
            canonical_box_size=pooler.canonical_box_size, canonical_level=pooler.canonical_level,
        )
        new.level_poolers = levels
        return new

    def forward(self, x, box_lists):
        boxes, rows = boxes_by_level(self, x, box_lists)
        if boxes is None:  # an empty batch, as detectron2's pooler answers it
            return x[0].new_zeros((0, x[0].shape[1], *_pair(self.output_size)))
        features = [f.dequantize() if f.is_quantized else f for f in x]
        with torch.autocast(features[0].device.type, enabled=False):
            return gather_roi_align_levels(
                features, boxes, rows,
                [(p.spatial_scale, p.sampling_ratio, p.aligned) for p in self.level_poolers],
                self.output_size,
            )
