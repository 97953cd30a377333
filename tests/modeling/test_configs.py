"""Every config in configs/ loads, and the model it builds runs in eval and train mode.

Written over ``configs/*.yaml`` so that it covers every backbone's configs. Only test-time
budgets (proposal counts, RoIs sampled per image) are lowered to keep CPU time down; the
architecture is the config's.
"""
from pathlib import Path

import pytest
import torch

import fpn_plugin  # noqa: F401  (applies compat before detectron2's submodules)
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from fpn_plugin import add_fpn_plugin_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
ALL_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
MODEL_CONFIGS = [p for p in ALL_CONFIGS if not p.name.startswith("Base-")]
SIZES = [(200, 250), (199, 301)]


def _load(path: Path):
    cfg = add_fpn_plugin_config(get_cfg())
    cfg.merge_from_file(str(path))
    return cfg


def test_configs_exist():
    names = {p.name for p in ALL_CONFIGS}
    for name in ("fpn_r50.yaml", "fpn_r101.yaml", "fpn_r18.yaml", "fpn_r34.yaml",
                 "r50_c4_voc07.yaml", "r101_c4_voc07.yaml", "r152_c4_voc07.yaml"):
        assert name in names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_names_its_target(path):
    cfg = _load(path)
    # torchvision's detectors resize test images in the model, as torchvision does.
    expected = "TorchvisionGeneralizedRCNN" if path.name.startswith("tv_") else "GeneralizedRCNN"
    assert cfg.MODEL.META_ARCHITECTURE == expected
    text = path.read_text()
    assert text.lstrip().startswith("#"), f"{path.name} must start with a comment on its target"
    if not path.name.startswith("Base-"):
        assert "_BASE_" in text, f"{path.name} must derive from a Base-*.yaml"
        # Weights and pixel statistics must agree on the channel order.
        mean = list(cfg.MODEL.PIXEL_MEAN)
        assert (mean[0] < mean[2]) == (cfg.INPUT.FORMAT == "BGR"), path.name


def _inputs(num_classes: int):
    g = torch.Generator().manual_seed(0)
    inputs = []
    for h, w in SIZES:
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).float()
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 120.0, 150.0], [50.0, 40.0, 190.0, 180.0]]))
        instances.gt_classes = torch.tensor([0, num_classes - 1])
        inputs.append({"image": image, "height": h, "width": w, "instances": instances})
    return inputs


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.name)
def test_model_from_config_runs(path):
    cfg = _load(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""  # random init: no file, no network
    # Test-time budgets only, not architecture: fewer proposals and sampled RoIs.
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 32
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs = _inputs(cfg.MODEL.ROI_HEADS.NUM_CLASSES)

    model.train()
    with EventStorage():  # detectron2 logs training statistics into one
        losses = model(inputs)
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"} <= set(losses)
    for name, value in losses.items():
        assert torch.isfinite(value).all(), (path.name, name, value)

    model.eval()
    with torch.no_grad():
        outputs = model([{k: v for k, v in d.items() if k != "instances"} for d in inputs])
    assert len(outputs) == 2
    for out, (h, w) in zip(outputs, SIZES):
        instances = out["instances"]
        assert instances.image_size == (h, w)
        assert torch.isfinite(instances.pred_boxes.tensor).all()
        assert (instances.pred_classes < cfg.MODEL.ROI_HEADS.NUM_CLASSES).all()


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if hasattr(value, "items"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize("ours,theirs", [
    ("fpn_r50.yaml", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"),
    ("fpn_r101.yaml", "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"),
])
def test_fpn_configs_are_detectron2_recipes_exactly(ours, theirs):
    """Every detectron2 key has detectron2's value; only the backbone's name and keys differ."""
    from detectron2 import model_zoo

    reference = get_cfg()
    reference.merge_from_file(model_zoo.get_config_file(theirs))
    cfg = _load(CONFIG_DIR / ours)
    mine, ref = _flatten(cfg), _flatten(reference)
    differences = {
        k: (mine[k], v) for k, v in ref.items()
        # MODEL.DEVICE: fpn_plugin's default is the device that exists, not always "cuda".
        if mine.get(k) != v and not k.startswith("MODEL.RESNETS.")
        and k not in ("MODEL.BACKBONE.NAME", "MODEL.DEVICE")
    }
    assert differences == {}
    assert cfg.MODEL.BACKBONE.NAME == "build_plugin_resnet_fpn_backbone"
    # The plugin ResNet is configured as detectron2's was.
    assert cfg.MODEL.PLUGIN_RESNET.DEPTH == reference.MODEL.RESNETS.DEPTH
    assert cfg.MODEL.PLUGIN_RESNET.STRIDE_IN_1X1 == reference.MODEL.RESNETS.STRIDE_IN_1X1
    assert cfg.MODEL.PLUGIN_RESNET.NORM == reference.MODEL.RESNETS.NORM
    assert list(cfg.MODEL.PLUGIN_RESNET.OUT_FEATURES) == list(reference.MODEL.RESNETS.OUT_FEATURES)
