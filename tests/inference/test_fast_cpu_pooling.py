"""The fast path's ROI pooling: each box pooled once into NHWC rows, which fc6 reads as they are."""
import copy

import pytest
import torch
from torch import nn

from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes

from fpn_plugin import precision
from fpn_plugin.inference.fast_cpu import optimize_for_cpu
from fpn_plugin.inference.fast_cpu.pooling import GatherROIPooler, NHWCFlatten, read_rois_nhwc
from fpn_plugin.modeling.roi_align import use_gather_roi_align

from .conftest import tiny_cfg
from .test_fast_cpu import _inputs, _tiny_c4_model, _tiny_model
from .test_roi_align import _rois

SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def _features_and_boxes(seed, empty_image=False):
    """FPN-like features of a 256x384 batch of two, and boxes of every size (each of the four
    levels gets some; some outside the image, one empty); the first image without boxes if
    asked."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, 8, 64 // 2**i, 96 // 2**i, generator=g) for i in range(4)]
    rois = _rois(g, (256, 384), 80, batch=2)
    rois[4, 1:] = torch.tensor([0.0, 0.0, 500.0, 500.0])  # P5 (over the border)
    rois[5, 1:] = torch.tensor([20.0, 10.0, 330.0, 250.0])  # P4
    if empty_image:
        rois[:, 0] = 1
    box_lists = [Boxes(rois[rois[:, 0] == b, 1:]) for b in range(2)]
    return features, box_lists


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("empty_image", [False, True])
def test_gather_pooler_gives_detectron2s_pooled_features(aligned, sampling_ratio, empty_image):
    pooler = ROIPooler(7, SCALES, sampling_ratio, "ROIAlignV2" if aligned else "ROIAlign")
    features, box_lists = _features_and_boxes(0, empty_image)
    expected = pooler(features, box_lists)  # detectron2's, torchvision's kernel per level
    gather = copy.deepcopy(pooler)
    assert use_gather_roi_align(gather) == 4
    fast = GatherROIPooler(gather)
    levels = assign_boxes_to_levels(box_lists, 2, 5, pooler.canonical_box_size, 4)
    assert set(levels.tolist()) == {0, 1, 2, 3}  # every level writes rows
    for layout in (torch.channels_last, torch.contiguous_format):
        got = fast([f.contiguous(memory_format=layout) for f in features], box_lists)
        assert got.shape == expected.shape == (80, 8, 7, 7)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    assert fast.output_size == pooler.output_size  # the original's attributes


def test_gather_pooler_pools_bf16_features_in_fp32_and_checks_its_inputs():
    pooler = ROIPooler(7, SCALES, 0, "ROIAlignV2")
    use_gather_roi_align(pooler)
    fast = GatherROIPooler(pooler)
    features, box_lists = _features_and_boxes(1)
    bf16 = [f.bfloat16() for f in features]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast(bf16, box_lists)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, fast([f.float() for f in bf16], box_lists).bfloat16())
    with pytest.raises(ValueError, match="4 levels and a batch of 2 expected, got 3 feature maps"):
        fast(features[:3], box_lists)
    with pytest.raises(ValueError, match="got 4 feature maps and 1 box lists"):
        fast(features, box_lists[:1])
    empty = [f[:0] for f in features]  # a batch of no images
    assert fast(empty, []).shape == pooler(empty, []).shape == (0, 8, 7, 7)
    with pytest.raises(TypeError, match="levels are all GatherROIAlign"):
        GatherROIPooler(ROIPooler(7, SCALES, 0, "ROIAlignV2"))


def test_bf16_rows_are_the_fp32_rows_rounded_as_a_bf16_fc6_would():
    pooler = ROIPooler(7, SCALES, 0, "ROIAlignV2")
    use_gather_roi_align(pooler)
    features, box_lists = _features_and_boxes(2)
    fp32 = GatherROIPooler(pooler)(features, box_lists)
    rows = GatherROIPooler(pooler, rows_dtype=torch.bfloat16)
    got = rows(features, box_lists)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, fp32.bfloat16())  # one rounding of the fp32 sums, nothing else
    fc6 = nn.Linear(8 * 49, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fc6(got.flatten(1)), fc6(fp32.flatten(1)))
    empty = rows([f[:0] for f in features], [])
    assert empty.shape == (0, 8, 7, 7) and empty.dtype == torch.bfloat16


def test_fc6_reads_the_nhwc_rows_with_the_same_result():
    model = _tiny_model()
    head = copy.deepcopy(model.roi_heads.box_head)
    use_gather_roi_align(model)
    assert read_rois_nhwc(model) == ["roi_heads.box_pooler", "roi_heads.box_head.flatten"]
    assert isinstance(model.roi_heads.box_pooler, GatherROIPooler)
    assert isinstance(model.roi_heads.box_head.flatten, NHWCFlatten)
    x = torch.randn(30, 32, 7, 7, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = head(x)
        for layout in (torch.channels_last, torch.contiguous_format):
            got = model.roi_heads.box_head(x.contiguous(memory_format=layout))
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().max() > 0.1
    assert not torch.equal(model.roi_heads.box_head.fc1.weight, head.fc1.weight)  # reordered


def test_c4_and_conv_box_heads_get_the_pooler_but_keep_their_flatten():
    c4 = _tiny_c4_model()
    use_gather_roi_align(c4)
    assert read_rois_nhwc(c4) == ["roi_heads.pooler"]  # res5 reads NCHW-shaped input
    cfg = tiny_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 1, 16
    conv_head = _tiny_model(cfg)
    fast = optimize_for_cpu(conv_head)
    assert isinstance(fast.roi_heads.box_pooler, GatherROIPooler)
    assert type(fast.roi_heads.box_head.flatten) is nn.Flatten  # after conv1, not the pooler
    x = torch.randn(30, 32, 7, 7, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # the NHWC rows the gather pooler gives, through conv1 and the flatten
        got = fast.roi_heads.box_head(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(got, conv_head.roi_heads.box_head(x), rtol=1e-5, atol=1e-5)


def test_fast_path_reads_rois_nhwc_with_bf16_heads_and_not_without_the_gather(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    model = _tiny_model()
    bf16 = optimize_for_cpu(model, bf16=True)
    assert isinstance(bf16.roi_heads.box_pooler, GatherROIPooler)
    assert isinstance(bf16.roi_heads.box_head.module.flatten, NHWCFlatten)  # inside FastHead
    assert bf16.roi_heads.box_pooler.rows_dtype == torch.bfloat16  # what the bf16 fc6 reads
    assert optimize_for_cpu(model).roi_heads.box_pooler.rows_dtype is None  # fp32 fc6
    fp32_rows = copy.deepcopy(bf16)
    fp32_rows.roi_heads.box_pooler.rows_dtype = None
    with torch.no_grad():
        for a, b in zip(bf16(_inputs()), fp32_rows(_inputs())):  # the same detections, exactly
            assert len(a["instances"]) > 0
            assert torch.equal(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)
            assert torch.equal(a["instances"].scores, b["instances"].scores)
    plain = optimize_for_cpu(model, gather_roi_align=False)
    assert type(plain.roi_heads.box_pooler) is ROIPooler
    assert type(plain.roi_heads.box_head.flatten) is nn.Flatten
