"""InPlaceROIPooler against detectron2's ROIPooler: values, gradients, edge cases, what it saves."""
import pytest
import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes

from fpn_plugin.modeling.roi_align import GatherROIAlign
from fpn_plugin.modeling.roi_pooler import InPlaceROIPooler

SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def _features(generator, channels=16, batch=2, size=(512, 704)):
    h, w = size
    return [torch.randn(batch, channels, int(h * s), int(w * s), generator=generator) for s in SCALES]


def _box_lists(generator, counts, size=(512, 704)):
    """Boxes of 8 to 700 px (log-uniform), of aspect 1/2 to 2: every FPN level gets some."""
    h, w = size
    lists = []
    for count in counts:
        side = 8 * (700 / 8) ** torch.rand(count, 1, generator=generator)
        aspect = 2 ** (torch.rand(count, 1, generator=generator) * 2 - 1)
        wh = torch.cat([side * aspect.sqrt(), side / aspect.sqrt()], 1)
        xy = torch.rand(count, 2, generator=generator) * torch.tensor([w, h]) - wh / 2
        lists.append(Boxes(torch.cat([xy, xy + wh], 1)))
    return lists


def _poolers(scales=SCALES, output_size=7, sampling_ratio=0, kind="ROIAlignV2"):
    detectron2s = ROIPooler(output_size, scales, sampling_ratio, kind)
    gathers = ROIPooler(output_size, scales, sampling_ratio, kind)
    gathers.level_poolers = torch.nn.ModuleList(GatherROIAlign.like(p) for p in gathers.level_poolers)
    return detectron2s, InPlaceROIPooler.like(gathers)


@pytest.mark.parametrize("sampling_ratio,kind", [(0, "ROIAlignV2"), (2, "ROIAlign")])
def test_equals_detectron2s_pooler_in_values_and_gradients(sampling_ratio, kind):
    g = torch.Generator().manual_seed(0)
    features = _features(g)
    box_lists = _box_lists(g, (70, 50))
    upstream = torch.randn(120, 16, 7, 7, generator=g)
    reference, in_place = _poolers(sampling_ratio=sampling_ratio, kind=kind)
    results = []
    for pooler in (reference, in_place):
        x = [f.clone().requires_grad_(True) for f in features]
        pooled = pooler(x, box_lists)
        pooled.backward(upstream)
        results.append((pooled, [f.grad for f in x]))
    (expected, expected_grads), (pooled, grads) = results
    assert pooled.shape == (120, 16, 7, 7) and pooled.is_contiguous()
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-5)
    for level, (grad, expected_grad) in enumerate(zip(grads, expected_grads)):
        assert expected_grad.abs().max() > 0.1, f"level {level} pooled no box: a weak test"
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-5)


def test_one_level_empty_batch_and_no_boxes():
    g = torch.Generator().manual_seed(1)
    reference, in_place = _poolers(scales=(1 / 16,), output_size=(14, 14))
    x = [torch.randn(2, 8, 32, 44, generator=g)]
    box_lists = _box_lists(g, (5, 3))
    torch.testing.assert_close(in_place(x, box_lists), reference(x, box_lists), rtol=0, atol=1e-5)
    _, in_place = _poolers()
    empty = [f[:0] for f in _features(g)]
    assert in_place(empty, []).shape == (0, 16, 7, 7)
    x = [f.requires_grad_(True) for f in _features(g)]
    pooled = in_place(x, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))])
    assert pooled.shape == (0, 16, 7, 7)
    pooled.sum().backward()  # no level pooled anything: no gradient, no error
    assert all(f.grad is None for f in x)


def test_keeps_only_the_boxes_for_the_backward():
    g = torch.Generator().manual_seed(2)
    features = [f.requires_grad_(True) for f in _features(g)]
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    _, in_place = _poolers()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        pooled = in_place(features, _box_lists(g, (40, 40)))
    assert [tuple(t.shape) for t in saved] == [(80, 5)]  # the boxes, as (batch index, x1, y1, x2, y2)
    pooled.sum().backward()


def test_bf16_features_pool_in_fp32_as_the_gather_layer_does():
    g = torch.Generator().manual_seed(3)
    features = [f.bfloat16() for f in _features(g)]
    box_lists = _box_lists(g, (30, 30))
    _, in_place = _poolers()
    layer_by_layer = ROIPooler(7, SCALES, 0, "ROIAlignV2")
    layer_by_layer.level_poolers = in_place.level_poolers  # detectron2's copy-in pooler, gather levels
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = in_place(features, box_lists)
        expected = layer_by_layer(features, box_lists)
    assert pooled.dtype == torch.bfloat16
    assert torch.equal(pooled, expected)


def test_refuses_a_pooler_with_other_levels():
    with pytest.raises(TypeError, match="levels are all GatherROIAlign"):
        InPlaceROIPooler.like(ROIPooler(7, SCALES, 0, "ROIAlignV2"))


def test_refuses_maps_or_box_lists_that_do_not_match():
    g = torch.Generator().manual_seed(4)
    _, in_place = _poolers()
    features, box_lists = _features(g), _box_lists(g, (3, 3))
    with pytest.raises(ValueError, match="4 levels and a batch of 2 expected, got 3 feature maps"):
        in_place(features[:3], box_lists)
    with pytest.raises(ValueError, match="got 4 feature maps and 1 box lists"):
        in_place(features, box_lists[:1])
