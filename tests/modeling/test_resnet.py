"""The plugin ResNet: torchvision parity, output shapes, FREEZE_AT and norms."""
import pytest
import torch
import torchvision
from torch import nn

import fpn_plugin  # noqa: F401  (applies compat before detectron2's submodules)
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone

from fpn_plugin import add_fpn_plugin_config
from fpn_plugin.modeling.resnet import PluginResNet
from fpn_plugin.modeling.resnet_blocks import resnet_out_channels

DEPTHS = [18, 34, 50, 101, 152]
ALL = ["res2", "res3", "res4", "res5"]


def _randomise_bn_stats(model: nn.Module, seed: int = 0) -> None:
    # Non-trivial statistics, so that a norm loaded into the wrong place cannot go unnoticed.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5


def _torchvision_state_dict(depth: int):
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    _randomise_bn_stats(tv, seed=depth)
    return tv.eval()


@pytest.mark.parametrize("depth", DEPTHS)
def test_parity_with_torchvision(depth):
    """(a) res2..res5 equal torchvision's layer1..layer4 with the same weights, in eval mode."""
    tv = _torchvision_state_dict(depth)
    model = PluginResNet(depth, ALL, norm="FrozenBN", stride_in_1x1=False).eval()
    state = {k: v for k, v in tv.state_dict().items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    # No renaming: every key of the plugin ResNet is a torchvision key, and vice versa.
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for index, name in enumerate(ALL, start=1):
            y = getattr(tv, f"layer{index}")(y)
            assert out[name].shape == y.shape
            diff = (out[name] - y).abs().max().item()
            assert diff <= 1e-5 * max(1.0, y.abs().max().item()), (depth, name, diff)


def test_parity_with_torchvision_bn_eval():
    """With norm BN (trainable BatchNorm) the eval-mode outputs also equal torchvision's."""
    tv = _torchvision_state_dict(18)
    model = PluginResNet(18, ALL, norm="BN").eval()
    model.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        y = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        assert torch.allclose(model(x)["res5"], y, atol=1e-5)


@pytest.mark.parametrize("depth", DEPTHS)
def test_output_names_strides_channels(depth):
    model = PluginResNet(depth, ALL)
    shapes = model.output_shape()
    assert list(shapes) == ALL
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    expected = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
    assert [s.channels for s in shapes.values()] == expected
    assert [resnet_out_channels(depth, n) for n in ALL] == expected
    out = model.eval()(torch.zeros(1, 3, 64, 64))
    for name in ALL:
        assert out[name].shape[1] == shapes[name].channels
        assert out[name].shape[-1] == 64 // shapes[name].stride


def test_stages_after_last_output_are_not_built():
    model = PluginResNet(50, ["res4"])
    assert not hasattr(model, "layer4")
    assert list(model.output_shape()) == ["res4"]
    assert model.output_shape()["res4"].stride == 16
    assert list(model(torch.zeros(1, 3, 64, 64))) == ["res4"]


def test_stride_in_1x1():
    msra = PluginResNet(50, ALL, stride_in_1x1=True)
    tv = PluginResNet(50, ALL, stride_in_1x1=False)
    first = [msra.layer2[0], tv.layer2[0]]
    assert first[0].conv1.stride == (2, 2) and first[0].conv2.stride == (1, 1)
    assert first[1].conv1.stride == (1, 1) and first[1].conv2.stride == (2, 2)
    assert msra.layer1[0].conv1.stride == (1, 1)  # layer1 has no stride in either


def _frozen_prefixes(freeze_at):
    return ["conv1.", "bn1."][: 2 if freeze_at >= 1 else 0] + [
        f"layer{i}." for i in range(1, 5) if freeze_at >= i + 1
    ]


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("norm", ["BN", "GN", "SyncBN"])
def test_freeze_at(freeze_at, norm):
    model = PluginResNet(18, ALL, norm=norm, freeze_at=freeze_at)
    frozen = _frozen_prefixes(freeze_at)
    norm_type = {"BN": nn.BatchNorm2d, "GN": nn.GroupNorm, "SyncBN": nn.SyncBatchNorm}[norm]
    for name, p in model.named_parameters():
        assert p.requires_grad == (not any(name.startswith(f) for f in frozen)), name
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, FrozenBatchNorm2d)):
            is_frozen = any((name + ".").startswith(f) for f in frozen)
            if is_frozen and norm != "GN":
                assert type(m) is FrozenBatchNorm2d, name
            else:
                assert isinstance(m, norm_type) and type(m) is not FrozenBatchNorm2d, name
    # Frozen parameters are not in any parameter group that needs gradients.
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (n_trainable == 0) == (freeze_at >= 5)


def test_frozen_bn_keeps_statistics_and_output():
    model = PluginResNet(18, ALL, norm="BN")
    _randomise_bn_stats(model)
    x = torch.randn(1, 3, 48, 48)
    before = model.eval()(x)["res5"]
    model.freeze(5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x)["res5"], before, atol=1e-5)


def test_frozen_bn_norm_has_no_parameters():
    model = PluginResNet(34, ALL, norm="FrozenBN", freeze_at=0)
    assert all(isinstance(m, FrozenBatchNorm2d) for n, m in model.named_modules() if "bn" in n
               or n.endswith("downsample.1"))
    # FrozenBN holds buffers only: the trainable parameters are the convolutions.
    assert all(p.dim() == 4 for p in model.parameters())


def test_empty_norm_is_rejected():
    with pytest.raises(ValueError, match="needs a norm layer"):
        PluginResNet(18, ALL, norm="")


def test_bad_depth_and_out_features():
    with pytest.raises(ValueError, match="depth 42"):
        PluginResNet(42, ALL)
    with pytest.raises(ValueError, match="subset"):
        PluginResNet(50, ["res6"])


def test_registered_builder_reads_config():
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_plugin_resnet_backbone"
    cfg.MODEL.PLUGIN_RESNET.DEPTH = 34
    cfg.MODEL.PLUGIN_RESNET.OUT_FEATURES = ["res3", "res5"]
    cfg.MODEL.PLUGIN_RESNET.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_backbone(cfg, ShapeSpec(channels=3))
    assert isinstance(model, PluginResNet) and model.depth == 34
    assert list(model.output_shape()) == ["res3", "res5"]
    assert isinstance(model.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(model.layer2[0].bn1, nn.BatchNorm2d)
    assert not model.layer1[0].conv1.weight.requires_grad and model.layer2[0].conv1.weight.requires_grad


def _plugin_fpn_cfg():
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_plugin_resnet_fpn_backbone"
    cfg.MODEL.PLUGIN_RESNET.DEPTH = 18
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    return cfg


def test_resnets_keys_that_would_be_ignored_are_refused():
    cfg = _plugin_fpn_cfg()
    cfg.MODEL.RESNETS.DEPTH = 101  # a detectron2 habit: the plugin reads PLUGIN_RESNET.DEPTH
    with pytest.raises(ValueError, match=r"MODEL.RESNETS.DEPTH is 101 but the plugin ResNet reads "
                                         r"MODEL.PLUGIN_RESNET.DEPTH \(18\): set MODEL.PLUGIN_RESNET.DEPTH 101"):
        build_backbone(cfg, ShapeSpec(channels=3))
    cfg = _plugin_fpn_cfg()
    cfg.MODEL.RESNETS.NUM_GROUPS = 32
    with pytest.raises(ValueError, match="NUM_GROUPS is 32: the plugin ResNet builds plain ResNets only"):
        build_backbone(cfg, ShapeSpec(channels=3))


def test_resnets_keys_at_default_or_agreeing_are_accepted():
    # What detectron2's Base-RCNN-FPN.yaml and R18 configs set, agreeing with the plugin's.
    cfg = _plugin_fpn_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert backbone.bottom_up.depth == 18
