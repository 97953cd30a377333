"""The fast path's RPN: top-k before decoding (TopKRPN) and the banded int8 head (Int8RPNHead)."""
import pytest
import torch

from detectron2.modeling.proposal_generator.rpn import RPN, StandardRPNHead

from fpn_plugin.inference.fast_cpu import optimize_for_cpu
from fpn_plugin.inference.fast_cpu.int8 import Int8ConvReLU, Int8RPNHead
from fpn_plugin.inference.fast_cpu.proposals import TopKRPN, select_before_decoding

from .conftest import tiny_cfg
from .test_fast_cpu import _inputs, _tiny_model


def _rpn_inputs(model):
    with torch.no_grad():
        images = model.preprocess_image(_inputs())
        return images, model.backbone(images.tensor)


def _small_topk_model():
    cfg = tiny_cfg()
    # Fewer anchors kept than the largest levels have (P2 has 32x40x3 at 128x160), more than
    # the smallest: both sides of the min(topk, anchors) rule.
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 60
    return _tiny_model(cfg)


def test_topk_rpn_proposes_what_detectron2s_rpn_proposes():
    model = _small_topk_model()
    images, features = _rpn_inputs(model)
    with torch.no_grad():
        expected, _ = model.proposal_generator(images, features)
        assert select_before_decoding(model)
        assert type(model.proposal_generator) is TopKRPN
        got, _ = model.proposal_generator(images, features)
    levels = [features[f] for f in model.proposal_generator.in_features]
    anchors = [h * w * 3 for h, w in (f.shape[2:] for f in levels)]
    assert min(anchors) < 200 < max(anchors)
    for e, g in zip(expected, got):
        assert len(e) == len(g) == 60
        torch.testing.assert_close(g.proposal_boxes.tensor, e.proposal_boxes.tensor, rtol=0, atol=0)
        torch.testing.assert_close(g.objectness_logits, e.objectness_logits, rtol=0, atol=0)


def test_topk_rpn_trains_as_detectron2s_and_only_replaces_an_exact_rpn():
    model = _small_topk_model()
    select_before_decoding(model)
    rpn = model.proposal_generator.train()
    images, features = _rpn_inputs(model)
    with torch.no_grad():
        outputs = _rpn_outputs(rpn, images, features)
        got = rpn.predict_proposals(*outputs)
        expected = RPN.predict_proposals(rpn, *outputs)  # detectron2's own selection
    for e, g in zip(expected, got):
        assert len(g) == len(e) > 60  # the training top-k, not the test's 200/60
        assert torch.equal(g.proposal_boxes.tensor, e.proposal_boxes.tensor)

    class OwnRPN(RPN):
        pass

    other = _small_topk_model()
    other.proposal_generator.__class__ = OwnRPN
    assert not select_before_decoding(other)
    assert type(other.proposal_generator) is OwnRPN
    assert type(optimize_for_cpu(_small_topk_model(), rpn_topk=False).proposal_generator) is RPN
    assert type(optimize_for_cpu(_small_topk_model()).proposal_generator) is TopKRPN


def _rpn_outputs(rpn, images, features):
    levels = [features[f] for f in rpn.in_features]
    anchors = rpn.anchor_generator(levels)
    logits, deltas = rpn.rpn_head(levels)
    logits = [s.permute(0, 2, 3, 1).flatten(1) for s in logits]
    deltas = [
        d.view(d.shape[0], -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
        for d in deltas
    ]
    return anchors, logits, deltas, images.image_sizes


def test_int8_rpn_head_gives_the_heads_own_outputs_bit_for_bit():
    model = optimize_for_cpu(_tiny_model(), int8_rpn=_inputs())
    banded = model.proposal_generator.rpn_head
    assert isinstance(banded, Int8RPNHead) and isinstance(banded.conv, Int8ConvReLU)
    _, features = _rpn_inputs(model)
    levels = [features[f] for f in model.proposal_generator.in_features]
    with torch.no_grad():
        expected = banded.head(levels)  # detectron2's forward: one full dequantized map
        batch, channels, height, width = levels[0].shape
        banded.band_bytes = 4 * batch * channels * width * 5  # 5 rows of P2 per band
        assert height > 5 and height % 5 != 0  # several bands, the last one shorter
        got = banded(levels)
    for e, g in zip(expected, got):  # logits, then deltas
        for e_level, g_level in zip(e, g):
            assert g_level.shape == e_level.shape
            assert torch.equal(g_level, e_level)


def test_int8_rpn_keeps_a_subclassed_heads_own_forward():
    class OwnHead(StandardRPNHead):
        def forward(self, features):
            return super().forward(features)

    model = _tiny_model()
    head = model.proposal_generator.rpn_head
    head.__class__ = OwnHead
    fast = optimize_for_cpu(model, int8_rpn=_inputs())
    assert type(fast.proposal_generator.rpn_head) is OwnHead
    assert isinstance(fast.proposal_generator.rpn_head.conv, Int8ConvReLU)
    with pytest.raises(TypeError, match="conv is an Int8ConvReLU"):
        Int8RPNHead(head)
