"""VGG16 backbone, its fc6/fc7 box head, VGG16-FPN and the VGG16 configs.

That the detectors of the VGG16 configs run in train and eval mode on 200x250 + 199x301 images
is tested for every config by tests/modeling/test_configs.py.
"""
import math
from pathlib import Path

import pytest
import torch
import torchvision

import fpn_plugin  # noqa: F401  (applies compat before detectron2's submodules)
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.structures import ImageList

from fpn_plugin import add_fpn_plugin_config
from fpn_plugin.modeling.vgg import VGG16, VGG16_CONV_INDICES, VGG16BoxHead

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL_FEATURES = ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3", "pool5"]


def _cfg(name):
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


@pytest.fixture(scope="module")
def tv_vgg16():
    """A randomly initialised torchvision vgg16 in eval mode (dropout off)."""
    torch.manual_seed(0)
    return torchvision.models.vgg16().eval()


def test_output_names_strides_channels_and_sizes():
    backbone = VGG16(out_features=list(reversed(ALL_FEATURES)))
    shapes = backbone.output_shape()
    assert list(shapes) == ALL_FEATURES  # high to low resolution, whatever order was asked
    assert [s.stride for s in shapes.values()] == [1, 2, 4, 8, 16, 32]
    assert [s.channels for s in shapes.values()] == [64, 128, 256, 512, 512, 512]
    assert len(backbone.features) == 31  # torchvision's whole vgg16().features
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 67, 101))
    # torchvision's max-pools floor odd sizes.
    expected = {
        "conv1_2": (67, 101),
        "conv2_2": (33, 50),
        "conv3_3": (16, 25),
        "conv4_3": (8, 12),
        "conv5_3": (4, 6),
        "pool5": (2, 3),
    }
    assert {k: tuple(v.shape[2:]) for k, v in out.items()} == expected
    assert {k: v.shape[1] for k, v in out.items()} == {k: s.channels for k, s in shapes.items()}


def test_builder_from_config_is_the_paper_backbone():
    backbone = build_backbone(_cfg("vgg16_voc07.yaml"), ShapeSpec(channels=3))
    assert isinstance(backbone, VGG16)
    assert backbone.output_shape() == {"conv5_3": ShapeSpec(channels=512, stride=16)}
    # Four max-pools: only features[:30] is built (pool5 would be dead weight).
    assert len(backbone.features) == 30
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in backbone.features) == 4
    convs = [i for i, m in enumerate(backbone.features) if isinstance(m, torch.nn.Conv2d)]
    assert tuple(convs) == VGG16_CONV_INDICES


def _frozen(backbone):
    return {name for name, p in backbone.named_parameters() if not p.requires_grad}


def _params(conv_indices):
    return {f"features.{i}.{p}" for i in conv_indices for p in ("weight", "bias")}


def test_first_four_convs_frozen_by_default():
    backbone = build_backbone(_cfg("vgg16_voc07.yaml"), ShapeSpec(channels=3))
    assert _frozen(backbone) == _params([0, 2, 5, 7])
    backbone(torch.randn(1, 3, 32, 32))["conv5_3"].sum().backward()
    grads = {name for name, p in backbone.named_parameters() if p.grad is not None}
    assert grads == _params(VGG16_CONV_INDICES[4:])


@pytest.mark.parametrize("n", [0, 1, 13])
def test_freeze_convs_counts_conv_layers(n):
    backbone = VGG16(out_features=["pool5"], freeze_convs=n)
    assert _frozen(backbone) == _params(VGG16_CONV_INDICES[:n])


def test_bad_arguments_say_what_to_change():
    with pytest.raises(ValueError, match=r"FREEZE_CONVS is 14.*from 0 to 13"):
        VGG16(freeze_convs=14)
    with pytest.raises(ValueError, match=r"unknown \['conv5'\].*conv5_3"):
        VGG16(out_features=["conv5"])
    with pytest.raises(ValueError, match=r"512 x 7 x 7 = 25088.*POOLER_RESOLUTION: 7"):
        VGG16BoxHead(ShapeSpec(channels=256, height=7, width=7))


def test_conv_features_equal_torchvision_vgg16(tv_vgg16):
    backbone = VGG16(out_features=ALL_FEATURES).eval()
    # Same module names: torchvision's features state dict loads with no renaming at all.
    backbone.features.load_state_dict(tv_vgg16.features.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        out = backbone(x)
        reference = {
            "conv3_3": tv_vgg16.features[:16](x),
            "conv4_3": tv_vgg16.features[:23](x),
            "conv5_3": tv_vgg16.features[:30](x),
            "pool5": tv_vgg16.features(x),
        }
    for name, ref in reference.items():
        assert out[name].shape == ref.shape
        diff = (out[name] - ref).abs().max().item()
        print(f"VGG16 {name} vs torchvision: max abs diff {diff:.3g}")
        assert diff <= 1e-6 * max(1.0, ref.abs().max().item()), name


def test_box_head_is_torchvision_fc6_fc7(tv_vgg16):
    head = VGG16BoxHead(ShapeSpec(channels=512, height=7, width=7)).eval()
    assert head.output_shape == ShapeSpec(channels=4096)
    assert (head.fc6.in_features, head.fc6.out_features) == (25088, 4096)
    assert (head.fc7.in_features, head.fc7.out_features) == (4096, 4096)
    head.classifier.load_state_dict(tv_vgg16.classifier[:6].state_dict(), strict=True)
    rois = torch.randn(3, 512, 7, 7)
    with torch.no_grad():
        out = head(rois)
        ref = tv_vgg16.classifier[:6](torch.flatten(tv_vgg16.avgpool(rois), 1))
    assert out.shape == (3, 4096)
    assert (out - ref).abs().max().item() <= 1e-6 * max(1.0, ref.abs().max().item())
    # Dropout (p=0.5 from MODEL.VGG.BOX_HEAD_DROPOUT) is active in training only.
    head.train()
    assert not torch.equal(head(rois), head(rois))


def test_fpn_levels_strides_channels_on_odd_sizes():
    backbone = build_backbone(_cfg("fpn_vgg16.yaml"), ShapeSpec(channels=3))
    assert isinstance(backbone, FPN) and isinstance(backbone.top_block, LastLevelMaxPool)
    assert isinstance(backbone.bottom_up, VGG16)
    assert list(backbone.bottom_up.output_shape()) == ["conv3_3", "conv4_3", "conv5_3", "pool5"]
    shapes = backbone.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    assert {s.channels for s in shapes.values()} == {256}
    assert backbone.size_divisibility == 32
    images = ImageList.from_tensors(
        [torch.randn(3, 199, 301), torch.randn(3, 200, 250)], backbone.size_divisibility
    )
    assert tuple(images.tensor.shape[2:]) == (224, 320)
    with torch.no_grad():
        out = backbone(images.tensor)
    sizes = {k: tuple(v.shape[1:]) for k, v in out.items()}
    expected = {f"p{k}": (256, math.ceil(224 / 2**k), math.ceil(320 / 2**k)) for k in range(2, 7)}
    assert sizes == expected


def test_paper_model_is_built_as_in_the_paper():
    model = build_model(_cfg("vgg16_voc07.yaml"))
    anchors = model.proposal_generator.anchor_generator
    assert anchors.num_anchors == [9] and anchors.strides == [16]
    (cell,) = list(anchors.cell_anchors)
    sides = ((cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1])).sqrt()
    assert sorted(round(s) for s in sides.tolist()) == [128] * 3 + [256] * 3 + [512] * 3
    pooler = model.roi_heads.box_pooler
    assert type(pooler.level_poolers[0]).__name__ == "RoIPool"
    assert pooler.output_size == (7, 7) and pooler.level_poolers[0].spatial_scale == 1 / 16
    assert isinstance(model.roi_heads.box_head, VGG16BoxHead)
    assert model.roi_heads.box_predictor.cls_score.out_features == 21  # 20 VOC classes + bg
    assert model.proposal_generator.rpn_head.conv.out_channels == 512  # the paper's 512-d


def test_base_config_loads_with_the_paper_recipe():
    cfg = _cfg("Base-VGG16.yaml")
    assert cfg.INPUT.MIN_SIZE_TRAIN == (600,) and cfg.INPUT.MAX_SIZE_TRAIN == 1000
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER) == (0.001, (60000,), 80000)
    assert (cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY) == (0.9, 0.0005)
    assert cfg.INPUT.RANDOM_FLIP == "horizontal"
    assert cfg.DATASETS.TRAIN == ("voc_2007_trainval",) and cfg.DATASETS.TEST == ("voc_2007_test",)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20 and cfg.MODEL.VGG.FREEZE_CONVS == 4
