"""ROIAlign as one weighted gather of feature rows: torchvision's result, several times faster on CPU.

Each output bin of ROIAlign is a weighted sum of feature-map pixels (the four bilinear
neighbours of each sampling point, divided by the number of points). Here the boxes' neighbour
indices and weights are computed with the sampling points, clamping and zeroing rules of
torchvision's kernel, and ``torch.nn.functional.embedding_bag`` sums the pixel rows (one bag
per output bin); the backward is the same kind of gather the other way (one bag per pixel, of
the bins that read it). In NHWC memory (the CPU fast path's) a pixel's channels are one
contiguous row and the feature map is used in place; NCHW maps are read a slice of channels at
a time. Like torchvision's, the layer keeps only the boxes for its backward.

Why not torchvision's kernel (what detectron2's ``ROIAlign`` calls): on CPU it walks the boxes
and channels one at a time and reads NCHW only; its backward took 44 % (fp32) and 56 % (bf16)
of a builtin R50-FPN training step on an AMD EPYC (2 threads, batch 2 of 192x256), and this
gather's forward and backward together measured about 8x faster with the same gradients.
``MODEL.PLUGIN_ROI_ALIGN`` chooses (:func:`use_configured_roi_align`).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch import nn

__all__ = [
    "GatherROIAlign", "gather_roi_align", "gather_roi_align_levels", "use_gather_roi_align",
    "use_configured_roi_align",
]

ROI_ALIGN_CHOICES = ("auto", "gather", "torchvision")


def _pair(size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _roi_geometry(rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Per ROI: start (y, x), bin size (h, w) and sampling grid (h, w), as torchvision's kernel."""
    pooled_h, pooled_w = output_size
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # the legacy form makes every box at least one pixel
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
        grid_w = grid_h
    else:  # adaptive: about one point per feature pixel
        grid_h = torch.ceil(roi_h / pooled_h).long().clamp(min=0)
        grid_w = torch.ceil(roi_w / pooled_w).long().clamp(min=0)
    return (y1, x1), (roi_h / pooled_h, roi_w / pooled_w), (grid_h, grid_w)


def _axis_neighbours(start, bin_size, pooled: int, grid: int, size: int):
    """One axis of the sampling points of ``len(start)`` ROIs with the same ``grid``.

    Returns (index, weight), each (n, pooled, grid, 2): the low and high neighbour of each
    point and their bilinear weights, by torchvision's rules (points more than one pixel
    outside the map weigh 0; points within it clamp to its border).
    """
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device)[None, :, None]
    points = (torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5)[None, None, :]
    start, bin_size = start[:, None, None], bin_size[:, None, None]
    coord = start + bins * bin_size + points * bin_size / grid
    inside = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0.0)
    low = coord.long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low)
    weight = torch.stack((1.0 - frac, frac), dim=-1) * inside[..., None]
    return torch.stack((low, high), dim=-1), weight


def _group_neighbours(height, width, rois, start, bin_size, grid, output_size):
    """Rows and weights of ROIs sharing one sampling grid: two (n, bins * 4 * points per bin).

    Per ROI: its bins in row-major order, each the 4 neighbours of each of its points.
    """
    (pooled_h, pooled_w), (grid_h, grid_w) = output_size, grid
    y_index, y_weight = _axis_neighbours(start[0], bin_size[0], pooled_h, grid_h, height)
    x_index, x_weight = _axis_neighbours(start[1], bin_size[1], pooled_w, grid_w, width)
    y_index = y_index * width + (rois[:, 0].long() * (height * width))[:, None, None, None]
    y_weight = y_weight / (grid_h * grid_w)
    # (n, bin y, bin x, point and neighbour in y, point and neighbour in x): the bag of a bin
    # is its last two dimensions (the order inside a bag does not matter).
    y_rows, x_rows = y_index.flatten(2)[:, :, None, :, None], x_index.flatten(2)[:, None, :, None, :]
    rows = y_rows + x_rows
    weights = y_weight.flatten(2)[:, :, None, :, None] * x_weight.flatten(2)[:, None, :, None, :]
    return rows.reshape(len(rois), -1), weights.reshape(len(rois), -1)


def gather_roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """``torchvision.ops.roi_align`` computed as a weighted gather of pixel rows.

    Args:
        features: (N, C, H, W), NCHW or channels_last memory; fp32 or fp64.
        rois: (K, 5): batch index, then x1, y1, x2, y2 in image coordinates.
        output_size, spatial_scale, sampling_ratio, aligned: as torchvision's ``roi_align``.

    Returns:
        (K, C, pooled_h, pooled_w) in ``features``' dtype, contiguous (NCHW); equal to
        torchvision's result up to float rounding, and so is its gradient. As torchvision's,
        it saves only the boxes for the backward.
    """
    if features.dim() != 4 or rois.dim() != 2 or rois.size(1) != 5:
        raise ValueError(
            f"gather_roi_align needs features (N, C, H, W) and rois (K, 5), got "
            f"{tuple(features.shape)} and {tuple(rois.shape)}"
        )
    output_size = _pair(output_size)
    if len(rois) == 0:
        return features.new_zeros((0, features.shape[1], *output_size))
    return gather_roi_align_levels(
        [features], rois, [None], [(spatial_scale, sampling_ratio, aligned)], output_size
    )


def gather_roi_align_levels(features, rois, level_rows, levels, output_size) -> torch.Tensor:
    """Several feature levels' :func:`gather_roi_align` written into one output, in place.

    Args:
        features: one (N, C, H, W) map per level, all of one dtype; fp16/bf16 maps are pooled
            in fp32 and the sums rounded to their dtype.
        rois: (K, 5), every level's boxes.
        level_rows: per level, the rows of ``rois`` it pools (an int64 tensor), or None for
            all of them; each row belongs to one level.
        levels: per level, (spatial_scale, sampling_ratio, aligned).
        output_size: (pooled_h, pooled_w).

    Returns:
        (K, C, pooled_h, pooled_w), contiguous, in the maps' dtype: what detectron2's
        ``ROIPooler`` assembles from one ``ROIAlign`` result per level, with no such result
        made and copied in.
    """
    rois, output_size = rois.float(), _pair(output_size)
    if torch.jit.is_tracing() or not (
        torch.is_grad_enabled() and any(x.requires_grad for x in features)
    ):  # no gradient wanted (a trace, as fvcore's FLOP count, cannot record the Function)
        return _pool_levels(features, rois, level_rows, levels, output_size)
    return _GatherROIAlign.apply(rois, level_rows, levels, output_size, *features)


# NCHW features are pooled 64 channels at a time, each slice copied to NHWC rows: a quarter of
# a whole-map copy, and measured as fast as one pass over all channels.
_CHANNELS_PER_PASS = 64
# At most this many (row, weight) pairs per embedding_bag call: the index arrays stay a few MB
# however many boxes and sampling points a level has.
_ENTRIES_PER_CALL = 1 << 18


def _channel_slices(features: torch.Tensor):
    channels = features.shape[1]
    if features.is_contiguous(memory_format=torch.channels_last):
        return [slice(0, channels)]  # its rows are read in place
    return [slice(c, min(c + _CHANNELS_PER_PASS, channels)) for c in range(0, channels, _CHANNELS_PER_PASS)]


def _in_fp32(features: torch.Tensor) -> torch.Tensor:
    return features if features.dtype in (torch.float32, torch.float64) else features.float()


class _GatherROIAlign(torch.autograd.Function):
    """The gather and its adjoint, which is a gather too: each pixel's gradient is the
    weighted sum of the bins that read it. Each builds its indices from the boxes (the forward
    a few boxes at a time, the backward a level at a time) and reads a slice of channels at a
    time, so no index array or feature copy lives from one to the other."""

    @staticmethod
    def forward(ctx, rois, level_rows, levels, output_size, *features):
        ctx.save_for_backward(rois)
        ctx.level_rows, ctx.levels, ctx.output_size = level_rows, levels, output_size
        ctx.features = [(x.shape, x.dtype) for x in features]
        return _pool_levels(features, rois, level_rows, levels, output_size)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        grad = grad.flatten(2)
        grads = []
        for i, ((shape, dtype), rows, level) in enumerate(zip(ctx.features, ctx.level_rows, ctx.levels)):
            needed = ctx.needs_input_grad[4 + i] and (rows is None or len(rows))
            grads.append(
                _level_gradient(grad, rows, rois if rows is None else rois[rows], shape, level,
                                ctx.output_size).to(dtype) if needed else None
            )
        return (None, None, None, None, *grads)


def _pool_levels(features, rois, level_rows, levels, output_size) -> torch.Tensor:
    channels, bins = features[0].shape[1], output_size[0] * output_size[1]
    out = features[0].new_empty((len(rois), channels, bins))
    for x, rows, level in zip(features, level_rows, levels):
        if rows is not None and len(rows) == 0:
            continue
        level_rois = rois if rows is None else rois[rows]
        for part in _channel_slices(x):
            pool_into(
                out.transpose(1, 2)[..., part], rows, _in_fp32(x[:, part]), level_rois,
                output_size, *level,
            )
    return out.view(len(rois), channels, *output_size)


def _level_gradient(grad, rows, rois, shape, level, output_size) -> torch.Tensor:
    """One level's features' gradient: every pixel's bag of the bins that read it."""
    n, channels, height, width = shape
    bag_rows, weights, offsets = _roi_bags(height, width, rois, output_size, *level)
    order = torch.argsort(bag_rows, stable=True)
    bag_sizes = torch.diff(offsets, append=offsets.new_tensor([len(bag_rows)]))
    readers = torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), bag_sizes)[order]
    weights = weights[order]
    del order
    reads = torch.bincount(bag_rows, minlength=n * height * width)
    pixel_offsets = torch.cumsum(reads, 0) - reads
    del bag_rows, reads
    compute = grad.dtype if grad.dtype == torch.float64 else torch.float32
    grad_features = grad.new_empty(shape, dtype=compute)
    for c in range(0, channels, _CHANNELS_PER_PASS):
        part = slice(c, min(c + _CHANNELS_PER_PASS, channels))
        level_grad = grad[:, part] if rows is None else grad[:, part].index_select(0, rows)
        bin_rows = level_grad.transpose(1, 2).reshape(-1, part.stop - part.start).to(compute)
        summed = F.embedding_bag(
            readers, bin_rows, pixel_offsets, mode="sum", per_sample_weights=weights.to(compute)
        )
        grad_features[:, part] = summed.view(n, height, width, -1).permute(0, 3, 1, 2)
    return grad_features


def _pixel_rows(features: torch.Tensor) -> torch.Tensor:
    """(N * H * W, C): a view of channels_last features, a copy of NCHW ones."""
    n, channels, height, width = features.shape
    return features.permute(0, 2, 3, 1).reshape(n * height * width, channels)


def _grid_groups(grid_h: torch.Tensor, grid_w: torch.Tensor):
    """(members, (grid h, grid w)) for each set of ROIs sharing one sampling grid."""
    grid_key = grid_h * (int(grid_w.max()) + 1 if len(grid_h) else 1) + grid_w
    order = torch.argsort(grid_key, stable=True)
    _, counts = torch.unique_consecutive(grid_key[order], return_counts=True)
    begin = 0
    for count in counts.tolist():
        members = order[begin:begin + count]
        begin += count
        yield members, (int(grid_h[members[0]]), int(grid_w[members[0]]))


def _roi_bags(height, width, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Every ROI's bins as ``embedding_bag`` bags, ROI after ROI: (rows, weights, offsets).

    A bin's bag holds the 4 neighbours of each of its sampling points, as
    :func:`_group_neighbours` orders them (so each bin sums in the same order as
    :func:`pool_into`'s); a ROI without sampling points has empty bags, which sum to zero.
    """
    start, bin_size, (grid_h, grid_w) = _roi_geometry(
        rois, output_size, spatial_scale, sampling_ratio, aligned
    )
    bins = output_size[0] * output_size[1]
    bag = 4 * grid_h * grid_w
    first = torch.cumsum(bins * bag, 0) - bins * bag  # each ROI's first entry
    total = int((bins * bag).sum())
    rows = torch.empty(total, dtype=torch.long, device=rois.device)
    weights = torch.empty(total, dtype=rois.dtype, device=rois.device)
    for members, grid in _grid_groups(grid_h, grid_w):
        if grid[0] == 0 or grid[1] == 0:
            continue
        group_rows, group_weights = _group_neighbours(
            height, width, rois[members], (start[0][members], start[1][members]),
            (bin_size[0][members], bin_size[1][members]), grid, output_size,
        )
        entries = torch.arange(group_rows.shape[1], device=rois.device)
        at = (first[members][:, None] + entries[None, :]).flatten()
        rows[at] = group_rows.flatten()
        weights[at] = group_weights.flatten()
    bin_starts = torch.arange(bins, device=rois.device)[None, :] * bag[:, None]
    return rows, weights, (first[:, None] + bin_starts).flatten()


def pool_into(
    out: torch.Tensor,
    out_rows,
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> None:
    """:func:`gather_roi_align` of ``rois`` written into rows ``out_rows`` of ``out``, bit for
    bit, the ROIs of one sampling grid at a time, at most ``_ENTRIES_PER_CALL`` neighbours per
    call (no gradient: the gather's forward and the fast path's pooler).

    Args:
        out: (M, pooled_h * pooled_w, C): each ROI's bins as rows of channels, written in
            place (any strides: an NCHW tensor's ``.transpose(1, 2)`` is written as NCHW); in
            ``features``' dtype, or a narrower one that the sums are rounded to.
        out_rows: (K,) the row of ``out`` for each ROI, or None for rows 0..K-1.
        features, rois, output_size (a pair), spatial_scale, sampling_ratio, aligned: as
            :func:`gather_roi_align`.
    """
    channels, height, width = features.shape[1:]
    pixels = _pixel_rows(features)
    rois = rois.float()
    start, bin_size, (grid_h, grid_w) = _roi_geometry(
        rois, output_size, spatial_scale, sampling_ratio, aligned
    )
    bins = output_size[0] * output_size[1]
    # ROIs of one sampling grid are pooled together: their neighbours are broadcasts (no
    # per-point index arithmetic) and each group's bags are of one size.
    for group, grid in _grid_groups(grid_h, grid_w):
        bag = 4 * grid[0] * grid[1]
        for members in group.split(max(1, _ENTRIES_PER_CALL // max(1, bins * bag))):
            rows_out = members if out_rows is None else out_rows[members]
            if bag == 0:  # no sampling points: zeros, as torchvision
                out.index_fill_(0, rows_out, 0)
                continue
            rows, weights = _group_neighbours(
                height, width, rois[members], (start[0][members], start[1][members]),
                (bin_size[0][members], bin_size[1][members]), grid, output_size,
            )
            pooled = F.embedding_bag(
                rows.reshape(-1, bag), pixels, mode="sum",
                per_sample_weights=weights.reshape(-1, bag).to(pixels.dtype),
            )
            out.index_put_((rows_out,), pooled.reshape(len(members), bins, channels).to(out.dtype))


class GatherROIAlign(nn.Module):
    """detectron2's ``ROIAlign`` (same settings and result) computed by :func:`gather_roi_align`.

    Under autocast, or given fp16/bf16 features, it pools in fp32 and returns the features'
    dtype, as torchvision's autocast kernel does, but with the boxes in fp32: detectron2's layer
    casts them to the features' dtype, which in bf16 rounds coordinates of 512-1023 px to
    steps of 4 px.
    """

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int, aligned: bool):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    @classmethod
    def like(cls, roi_align: nn.Module) -> "GatherROIAlign":
        return cls(
            roi_align.output_size, roi_align.spatial_scale, roi_align.sampling_ratio,
            roi_align.aligned,
        )

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if features.is_quantized:
            features = features.dequantize()
        dtype = features.dtype
        with torch.autocast(features.device.type, enabled=False):
            pooled = gather_roi_align(
                features if dtype in (torch.float32, torch.float64) else features.float(),
                rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned,
            )
        return pooled.to(dtype)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


def use_gather_roi_align(model: nn.Module) -> int:
    """Replace each detectron2 ``ROIAlign`` in ``model``'s poolers by :class:`GatherROIAlign`,
    and each detectron2 ``ROIPooler`` whose levels are then all gathers by an
    :class:`~fpn_plugin.modeling.roi_pooler.InPlaceROIPooler`.

    Returns how many ROIAligns were replaced (ROIPool and other pooler types are left as they
    are).
    """
    from detectron2.layers import ROIAlign
    from detectron2.modeling.poolers import ROIPooler

    from .roi_pooler import InPlaceROIPooler, pools_by_gather

    replaced = 0
    for module in model.modules():
        poolers = getattr(module, "level_poolers", None)
        if not isinstance(poolers, nn.ModuleList):
            continue
        for i, pooler in enumerate(poolers):
            if type(pooler) is ROIAlign:
                poolers[i] = GatherROIAlign.like(pooler)
                replaced += 1
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is ROIPooler and pools_by_gather(child):
                setattr(parent, name, InPlaceROIPooler.like(child))
    return replaced


def use_configured_roi_align(model: nn.Module, cfg) -> str:
    """Apply ``cfg.MODEL.PLUGIN_ROI_ALIGN`` to a model detectron2 built; returns what it uses.

    "auto" is the gather on the CPU and torchvision's kernel elsewhere (fast on CUDA);
    "gather" and "torchvision" force one.

    Raises:
        ValueError: another value.
    """
    from ..device import resolve_device

    choice = cfg.MODEL.PLUGIN_ROI_ALIGN
    if choice not in ROI_ALIGN_CHOICES:
        raise ValueError(
            f"MODEL.PLUGIN_ROI_ALIGN must be one of {', '.join(ROI_ALIGN_CHOICES)}, got {choice!r}"
        )
    if choice == "auto":
        on_cpu = torch.device(resolve_device(cfg.MODEL.DEVICE)).type == "cpu"
        choice = "gather" if on_cpu else "torchvision"
    if choice == "gather":
        use_gather_roi_align(model)
    return choice
