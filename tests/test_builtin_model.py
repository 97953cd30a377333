"""detectron2's own Faster R-CNN R50-FPN, from its model-zoo config, trains and predicts on CPU."""
import math

import torch

import fpn_plugin  # noqa: F401  (applies the compatibility fixes)
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage


def _builtin_r50_fpn():
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    return build_model(cfg)


def test_builtin_r50_fpn_trains_one_step_and_predicts_on_cpu():
    model = _builtin_r50_fpn()
    image = torch.randint(0, 256, (3, 150, 203), dtype=torch.uint8)
    gt = Instances((150, 203), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 100.0, 120.0]])))
    gt.gt_classes = torch.tensor([3])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    before = model.roi_heads.box_predictor.cls_score.weight.detach().clone()

    model.train()
    with EventStorage(0):
        losses = model([{"image": image, "instances": gt}])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(before, model.roi_heads.box_predictor.cls_score.weight)

    model.eval()
    with torch.no_grad():
        (output,) = model([{"image": image, "height": 300, "width": 406}])
    instances = output["instances"]
    # Predictions are rescaled to the requested output size.
    assert instances.image_size == (300, 406)
    assert instances.pred_boxes.tensor.shape[1] == 4
    assert torch.isfinite(instances.scores).all()
