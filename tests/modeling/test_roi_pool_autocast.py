"""VGG16's ROIPool under CPU bf16 autocast (torchvision has no CPU autocast kernel for it)."""
from pathlib import Path

import pytest
import torch
from torchvision.ops import roi_pool

import fpn_plugin  # noqa: F401  (registers the kernel)
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from fpn_plugin import add_fpn_plugin_config
from fpn_plugin.modeling import roi_pool_autocast

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_bf16_features_pool_as_fp32_and_keep_their_dtype():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 20, 24)
    rois = torch.tensor([[0, 1.5, 2.0, 17.0, 13.0], [1, 0.0, 0.0, 23.0, 19.0]])
    expected = roi_pool(features.bfloat16().float(), rois, 7, 1.0)
    with torch.autocast(**BF16):
        pooled = roi_pool(features.bfloat16(), rois, 7, 1.0)
    assert pooled.dtype == torch.bfloat16
    # max-pooling picks values, it does not round them: exact on the bf16 input
    assert torch.equal(pooled.float(), expected)


def test_gradient_flows_through_the_fp32_kernel():
    torch.manual_seed(0)
    features = torch.randn(1, 4, 12, 12, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 10.0, 9.0]])
    with torch.autocast(**BF16):
        roi_pool(features, rois, 3, 1.0).float().sum().backward()
    reference = features.detach().clone().requires_grad_()
    roi_pool(reference, rois, 3, 1.0).sum().backward()
    assert torch.equal(features.grad, reference.grad)
    assert features.grad.sum() == 4 * 3 * 3  # one max per bin and channel


def test_registered_once_and_the_probe_now_passes():
    assert not roi_pool_autocast._autocast_fails()
    assert roi_pool_autocast.register_roi_pool_autocast_cpu() is False


@pytest.mark.slow
def test_vgg16_detector_predicts_and_trains_under_bf16_autocast():
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS / "vgg16_voc07.yaml"))
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
    # few RoIs: bf16 is emulated (slow) on CPUs without avx512_bf16/AMX
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 8, 8
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 8
    torch.manual_seed(0)
    model = build_model(cfg)
    image = torch.randint(0, 256, (3, 64, 80)).float()
    with torch.no_grad(), torch.autocast(**BF16):
        model.eval()
        out = model([{"image": image, "height": 64, "width": 80}])[0]["instances"]
    assert out.image_size == (64, 80)
    gt = Instances((64, 80), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 48.0, 40.0]])),
                   gt_classes=torch.tensor([3]))
    model.train()
    with EventStorage(0), torch.autocast(**BF16):
        losses = model([{"image": image, "instances": gt}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.roi_heads.box_head.fc6.weight.grad is not None
