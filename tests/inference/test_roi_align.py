"""The gather ROIAlign against torchvision's kernel (values, gradients, training), and where it is used."""
import copy

import pytest
import torch
from torchvision.ops import roi_align

from detectron2.layers import ROIAlign

from fpn_plugin.inference.fast_cpu import optimize_for_cpu
from fpn_plugin.modeling.roi_align import (
    GatherROIAlign, gather_roi_align, use_configured_roi_align, use_gather_roi_align,
)

from .conftest import tiny_cfg
from .test_fast_cpu import (
    _assert_same_detections, _inputs, _tiny_c4_model, _tiny_model,
)


def _rois(generator, image_hw, count, batch):
    """Boxes of many sizes (so many sampling grids), some outside the image, one empty."""
    h, w = image_hw
    xy = torch.rand(count, 2, generator=generator) * torch.tensor([w * 1.1, h * 1.1]) - 10
    wh = torch.rand(count, 2, generator=generator) ** 2 * torch.tensor([w * 0.6, h * 0.6])
    index = torch.randint(0, batch, (count, 1), generator=generator).float()
    rois = torch.cat([index, xy, xy + wh], dim=1)
    rois[0, 1:] = torch.tensor([-60.0, -50.0, -30.0, -20.0])  # wholly outside: zeros
    rois[1, 1:] = torch.tensor([w - 5.0, h - 5.0, w + 40.0, h + 30.0])  # over the far border
    rois[2, 1:] = torch.tensor([10.0, 12.0, 10.0, 12.0])  # empty: no sampling points
    rois[3, 1:] = torch.tensor([5.0, 30.0, 300.0, 33.0])  # thin and long: grid 1 x many
    return rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("output_size", [7, (14, 14), (3, 5)])
def test_gather_equals_torchvisions_roi_align(aligned, sampling_ratio, output_size):
    g = torch.Generator().manual_seed(0)
    scale = 0.25
    features = torch.randn(2, 16, 30, 41, generator=g)
    rois = _rois(g, (30 / scale, 41 / scale), 60, batch=2)
    size = (output_size, output_size) if isinstance(output_size, int) else output_size
    expected = roi_align(features, rois, size, scale, sampling_ratio, aligned)
    for layout in (torch.channels_last, torch.contiguous_format):
        got = gather_roi_align(
            features.contiguous(memory_format=layout), rois, output_size, scale,
            sampling_ratio, aligned,
        )
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    assert expected[0].abs().max() == 0  # outside
    if aligned and sampling_ratio == 0:  # (the legacy form makes the empty box one pixel)
        assert expected[2].abs().max() == 0
    assert expected[1].abs().max() > 0.1 and expected[3].abs().max() > 0.1


def test_gradient_equals_torchvisions_and_is_deterministic():
    g = torch.Generator().manual_seed(2)
    rois = _rois(g, (96, 128), 50, batch=2)
    upstream = torch.randn(50, 8, 7, 7, generator=g)
    grads = {}
    for name, pool in (("torchvision", lambda f: roi_align(f, rois, (7, 7), 0.25, 0, True)),
                       ("gather", lambda f: gather_roi_align(f, rois, 7, 0.25, 0, True)),
                       ("gather again", lambda f: gather_roi_align(f, rois, 7, 0.25, 0, True))):
        features = torch.randn(2, 8, 24, 32, generator=torch.Generator().manual_seed(3))
        features.requires_grad_(True)
        pool(features).backward(upstream)
        grads[name] = features.grad
    torch.testing.assert_close(grads["gather"], grads["torchvision"], rtol=0, atol=1e-5)
    assert torch.equal(grads["gather"], grads["gather again"])
    assert grads["gather"].abs().max() > 0.1


def test_gather_and_the_fast_paths_pool_into_agree_bit_for_bit():
    from fpn_plugin.modeling.roi_align import pool_into

    g = torch.Generator().manual_seed(5)
    rois = _rois(g, (96, 128), 60, batch=2)
    features = torch.randn(2, 16, 24, 32, generator=g).contiguous(memory_format=torch.channels_last)
    pooled = gather_roi_align(features, rois, 7, 0.25, 0, True)
    out = torch.full((80, 49, 16), float("nan"))
    rows = torch.randperm(80, generator=g)[:60]
    pool_into(out, rows, features, rois, (7, 7), 0.25, 0, True)
    assert torch.equal(out[rows], pooled.permute(0, 2, 3, 1).reshape(60, 49, 16))
    assert torch.equal(pooled[2], torch.zeros_like(pooled[2]))  # no sampling points: zeros
    assert gather_roi_align(features, rois[:0], 7, 0.25, 0, True).shape == (0, 16, 7, 7)


def test_backward_keeps_only_the_boxes():
    """Training memory: like torchvision's kernel, the gather saves the boxes for its backward
    and rebuilds its indices there (saving them cost ~16 MB per 1000 boxes per level)."""
    g = torch.Generator().manual_seed(4)
    rois = _rois(g, (96, 128), 200, batch=2)
    features = torch.randn(2, 64, 24, 32, generator=g, requires_grad=True)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        pooled = gather_roi_align(features, rois, 7, 0.25, 0, True)
    assert len(saved) == 1 and torch.equal(saved[0], rois)
    pooled.sum().backward()
    assert features.grad.abs().max() > 0.1


def test_channel_slices_and_call_sizes_change_no_bit(monkeypatch):
    """NCHW maps are pooled a slice of channels at a time and a group's boxes a few at a time:
    the result and the gradient are the same bit for bit as one pass over channels_last rows."""
    from fpn_plugin.modeling import roi_align as module

    g = torch.Generator().manual_seed(6)
    rois = _rois(g, (96, 128), 80, batch=2)
    features = torch.randn(2, 130, 24, 32, generator=g)  # 130: a shorter last slice
    upstream = torch.randn(80, 130, 7, 7, generator=g)
    results = []
    for layout, entries in ((torch.channels_last, 1 << 18), (torch.contiguous_format, 1 << 18),
                            (torch.contiguous_format, 2000)):
        monkeypatch.setattr(module, "_ENTRIES_PER_CALL", entries)
        x = features.clone(memory_format=layout).requires_grad_(True)
        pooled = gather_roi_align(x, rois, 7, 0.25, 0, True)
        pooled.backward(upstream)
        assert pooled.is_contiguous()
        results.append((pooled, x.grad))
    for pooled, grad in results[1:]:
        assert torch.equal(pooled, results[0][0])
        assert torch.equal(grad, results[0][1])
    torch.testing.assert_close(
        results[0][0], roi_align(features, rois, (7, 7), 0.25, 0, True), rtol=0, atol=1e-5
    )


def test_layer_pools_bf16_in_fp32_with_fp32_boxes():
    # Under bf16 autocast the pooler gets bf16 features. Like torchvision's autocast kernel the
    # gather pools them in fp32 and returns bf16, but it keeps the boxes fp32: detectron2's layer
    # casts them to the features' dtype, which in bf16 rounds image coordinates of 512-1023 px
    # to steps of 4 px.
    g = torch.Generator().manual_seed(1)
    features = torch.randn(1, 32, 100, 150, generator=g).bfloat16()
    rois = _rois(g, (400, 600), 40, batch=1)
    layer = GatherROIAlign((7, 7), 0.25, 0, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(features, rois)
        detectron2s = ROIAlign((7, 7), 0.25, 0, True)(features, rois)
    assert got.dtype == detectron2s.dtype == torch.bfloat16
    in_fp32 = roi_align(features.float(), rois, (7, 7), 0.25, 0, True)
    rounded_boxes = roi_align(features.float(), rois.bfloat16().float(), (7, 7), 0.25, 0, True)
    torch.testing.assert_close(detectron2s, rounded_boxes.bfloat16(), rtol=0, atol=0)
    # fp32 pooling rounded once: all but last-bit ties equal (bf16 pooling would not be).
    assert (got == in_fp32.bfloat16()).float().mean() > 0.99
    assert (got.float() - in_fp32).abs().max() <= in_fp32.abs().max() / 128
    assert (detectron2s.float() - in_fp32).abs().max() > 0.1  # the rounded boxes show
    none = gather_roi_align(features.float(), rois[:0], 7, 0.25, 0, True)
    assert none.shape == (0, 32, 7, 7)


def test_gather_refuses_wrong_shapes():
    with pytest.raises(ValueError, match=r"rois \(K, 5\), got \(16, 32, 8, 8\) and \(3, 4\)"):
        gather_roi_align(torch.zeros(16, 32, 8, 8), torch.zeros(3, 4), 7, 1.0, 0, True)


def test_replace_keeps_each_poolers_settings():
    model = _tiny_model()
    before = [(p.output_size, p.spatial_scale, p.sampling_ratio, p.aligned)
              for p in model.roi_heads.box_pooler.level_poolers]
    assert use_gather_roi_align(model) == len(before) == 4  # FPN's p2..p5
    poolers = model.roi_heads.box_pooler.level_poolers
    assert all(type(p) is GatherROIAlign for p in poolers)
    assert [(p.output_size, p.spatial_scale, p.sampling_ratio, p.aligned) for p in poolers] == before
    assert use_gather_roi_align(model) == 0  # nothing left to replace


def test_use_gather_roi_align_puts_it_in_place_once():
    from fpn_plugin.modeling.roi_pooler import InPlaceROIPooler

    model = _tiny_model()
    settings = model.roi_heads.box_pooler
    assert use_gather_roi_align(model) == 4
    pooler = model.roi_heads.box_pooler
    assert type(pooler) is InPlaceROIPooler
    assert (pooler.output_size, pooler.min_level, pooler.max_level, pooler.canonical_box_size,
            pooler.canonical_level) == (settings.output_size, settings.min_level, settings.max_level,
                                        settings.canonical_box_size, settings.canonical_level)
    assert all(type(p) is GatherROIAlign for p in pooler.level_poolers)
    assert use_gather_roi_align(model) == 0 and model.roi_heads.box_pooler is pooler
    c4 = _tiny_c4_model()
    assert use_gather_roi_align(c4) == 1 and type(c4.roi_heads.pooler) is InPlaceROIPooler


@pytest.mark.parametrize("make_model", [_tiny_model, _tiny_c4_model], ids=["fpn", "c4"])
def test_fast_path_uses_the_gather_and_gives_the_same_detections(make_model):
    model = make_model()
    fast = optimize_for_cpu(model)
    torchvision_roi = optimize_for_cpu(model, gather_roi_align=False)
    pooler = "pooler" if make_model is _tiny_c4_model else "box_pooler"
    assert all(type(p) is GatherROIAlign for p in getattr(fast.roi_heads, pooler).level_poolers)
    assert all(
        type(p) is ROIAlign for p in getattr(torchvision_roi.roi_heads, pooler).level_poolers
    )
    with torch.no_grad():
        for a, b in zip(torchvision_roi(_inputs()), fast(_inputs())):
            _assert_same_detections(a["instances"], b["instances"], box_atol=1e-3)


def test_configured_roi_align_auto_is_the_gather_on_cpu_only(monkeypatch):
    cfg = tiny_cfg()
    assert cfg.MODEL.PLUGIN_ROI_ALIGN == "auto" and cfg.MODEL.DEVICE == "cpu"
    model = _tiny_model()
    assert use_configured_roi_align(model, cfg) == "gather"
    assert all(type(p) is GatherROIAlign for p in model.roi_heads.box_pooler.level_poolers)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a simulated GPU host
    cfg.MODEL.DEVICE = "cuda"
    model = _tiny_model()
    assert use_configured_roi_align(model, cfg) == "torchvision"
    assert all(type(p) is ROIAlign for p in model.roi_heads.box_pooler.level_poolers)
    cfg.MODEL.PLUGIN_ROI_ALIGN = "gather"
    assert use_configured_roi_align(model, cfg) == "gather"
    cfg.MODEL.PLUGIN_ROI_ALIGN = "fast"
    with pytest.raises(ValueError, match="one of auto, gather, torchvision, got 'fast'"):
        use_configured_roi_align(model, cfg)


def test_training_losses_and_gradients_equal_torchvisions():
    # What the Trainer trains on CPU: detectron2's model with the gather in its box pooler.
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    torchvision_model = _tiny_model().train()
    gather_model = copy.deepcopy(torchvision_model)
    assert use_gather_roi_align(gather_model) == 4
    g = torch.Generator().manual_seed(4)
    data = []
    for h, w in ((96, 128), (90, 150)):
        boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 5.0, 120.0, 50.0]]))
        gt = Instances((h, w), gt_boxes=boxes)
        gt.gt_classes = torch.tensor([0, 2])
        data.append({"image": torch.randint(0, 256, (3, h, w), generator=g).float(), "instances": gt})
    results = []
    for model in (torchvision_model, gather_model):
        torch.manual_seed(5)  # the same anchor and proposal sampling
        with EventStorage():
            losses = model(data)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (tv_losses, tv_grads), (gather_losses, gather_grads) = results
    for name, value in tv_losses.items():
        torch.testing.assert_close(gather_losses[name], value, rtol=1e-5, atol=1e-6)
    assert tv_grads.keys() == gather_grads.keys() and "backbone.fpn_output2.weight" in tv_grads
    for name, grad in tv_grads.items():  # through the box pooler's backward into the FPN
        torch.testing.assert_close(gather_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert tv_grads["roi_heads.box_head.fc1.weight"].abs().max() > 0


def test_fvcore_counts_the_gather_models_flops_as_detectron2s():
    """detectron2's analyze_model traces the model: the in-place pooler must trace (its
    autograd Function cannot be recorded, so a trace pools without it)."""
    from fpn_plugin.export.tracing import tracing_adapter_class

    tracing_adapter_class()  # detectron2 0.6's analysis module imports it
    from detectron2.utils.analysis import FlopCountAnalysis

    detectron2s = _tiny_model()
    gathers = copy.deepcopy(detectron2s)
    use_gather_roi_align(gathers)
    counts = []
    for model in (detectron2s, gathers):
        counter = FlopCountAnalysis(model, _inputs()[:1])
        counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        counts.append(counter.total())
    assert counts[1] == counts[0] > 0
