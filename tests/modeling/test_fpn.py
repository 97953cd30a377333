"""The plugin ResNet-FPN backbone and the C4 variant: names, strides, channels, any input size."""
import pytest
import torch

import fpn_plugin  # noqa: F401  (applies compat before detectron2's submodules)
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.structures import ImageList

from fpn_plugin import add_fpn_plugin_config
from fpn_plugin.modeling.res5_roi_head import PluginRes5ROIHeads
from fpn_plugin.modeling.resnet import PluginResNet
from fpn_plugin.modeling.resnet_blocks import ResNetStage


def _fpn_cfg(depth):
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_plugin_resnet_fpn_backbone"
    cfg.MODEL.PLUGIN_RESNET.DEPTH = depth
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    return cfg


@pytest.mark.parametrize("depth", [18, 50])
def test_fpn_levels_strides_channels(depth):
    backbone = build_backbone(_fpn_cfg(depth), ShapeSpec(channels=3))
    assert isinstance(backbone, FPN) and isinstance(backbone.bottom_up, PluginResNet)
    assert isinstance(backbone.top_block, LastLevelMaxPool)
    shapes = backbone.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    assert {s.channels for s in shapes.values()} == {256}
    assert backbone.size_divisibility == 32
    # The names detectron2's R50-FPN checkpoints use for the FPN's own convolutions.
    names = {k for k in backbone.state_dict() if not k.startswith("bottom_up.")}
    assert {f"fpn_lateral{i}.weight" for i in range(2, 6)} <= names
    assert {f"fpn_output{i}.bias" for i in range(2, 6)} <= names


@pytest.mark.parametrize("size", [(199, 301), (200, 250), (33, 47)])
def test_fpn_any_input_size_after_padding(size):
    """detectron2 pads to size_divisibility; then every level has the expected size."""
    backbone = build_backbone(_fpn_cfg(18), ShapeSpec(channels=3)).eval()
    images = ImageList.from_tensors([torch.randn(3, *size)], backbone.size_divisibility)
    h, w = images.tensor.shape[-2:]
    assert h % 32 == 0 and w % 32 == 0 and h >= size[0] and w >= size[1]
    with torch.no_grad():
        out = backbone(images.tensor)
    for name, spec in backbone.output_shape().items():
        # P6 pools p5 with stride 2, so its size rounds up when p5's is odd.
        assert out[name].shape[-2:] == (-(-h // spec.stride), -(-w // spec.stride)), name
    # P6 is a stride-2 subsampling max-pool of P5 (kernel 1), as in the FPN paper.
    assert torch.equal(out["p6"], out["p5"][:, :, ::2, ::2])


def _c4_cfg(depth):
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_plugin_resnet_backbone"
    cfg.MODEL.PLUGIN_RESNET.DEPTH = depth
    cfg.MODEL.PLUGIN_RESNET.OUT_FEATURES = ["res4"]
    cfg.MODEL.RPN.IN_FEATURES = ["res4"]
    cfg.MODEL.ROI_HEADS.NAME = "PluginRes5ROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 20
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 8
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 16
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 16
    return cfg


@pytest.mark.parametrize("depth,channels", [(18, 512), (50, 2048)])
def test_c4_head_owns_layer4(depth, channels):
    model = build_model(_c4_cfg(depth))
    backbone, heads = model.backbone, model.roi_heads
    assert isinstance(backbone, PluginResNet) and not hasattr(backbone, "layer4")
    assert backbone.output_shape()["res4"].stride == 16
    assert isinstance(heads, PluginRes5ROIHeads)
    assert isinstance(heads.res5, ResNetStage) and heads.res5.torchvision_name == "layer4"
    assert heads.res5[-1].out_channels == channels
    assert heads.box_predictor.cls_score.in_features == channels
    # The head's layer4 has the keys of a full plugin ResNet's layer4.
    full = PluginResNet(depth, ["res5"]).layer4.state_dict()
    assert set(heads.res5.state_dict()) == set(full)
    assert all(heads.res5.state_dict()[k].shape == v.shape for k, v in full.items())


def test_c4_model_runs_on_odd_sizes():
    model = build_model(_c4_cfg(18))
    inputs = [
        {"image": torch.randint(0, 255, (3, 200, 250), dtype=torch.uint8).float(),
         "instances": None},
        {"image": torch.randint(0, 255, (3, 199, 301), dtype=torch.uint8).float(),
         "instances": None},
    ]
    model.eval()
    with torch.no_grad():
        out = model([{"image": d["image"]} for d in inputs])
    assert len(out) == 2 and out[1]["instances"].image_size == (199, 301)
