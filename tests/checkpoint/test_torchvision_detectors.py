"""torchvision's Faster R-CNN detectors in detectron2 (configs/tv_fasterrcnn_r50_fpn*.yaml).

A torchvision detector of each layout (v1: TwoMLPHead, FrozenBN; v2: BatchNorm FPN, two RPN
convs, four-conv box head) is trained briefly on the synthetic shapes so that its scores mean
something, saved as torchvision saves it, loaded through MODEL.WEIGHTS into the config's
detectron2 model, and both run on the same images. ResNet-18 keeps it fast; the conversion is
depth-independent, and the R-50 configs are checked on their published layouts below.
"""
import hashlib
import inspect
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, RPNHead
from torchvision.ops import box_iou

from fpn_plugin.checkpoint import CheckpointMismatchError, PluginCheckpointer
from fpn_plugin.config import load_config
from fpn_plugin.data.synthetic import ShapesSpec, register_shapes

CONFIGS = {"v1": "configs/tv_fasterrcnn_r50_fpn.yaml", "v2": "configs/tv_fasterrcnn_r50_fpn_v2.yaml"}
SIZE = (192, 256)  # the shapes' image size; the models' test size, so the first check resizes nothing
# Training-only sampling, smaller than torchvision's defaults (2000 proposals, 512 RoIs per
# image): RoIAlign's CPU backward took half of each step at 512. Inference is unchanged.
TRAINING = dict(rpn_post_nms_top_n_train=500, box_batch_size_per_image=64)


def _torchvision_detector(layout: str, num_classes: int = 4) -> FasterRCNN:
    """torchvision's fasterrcnn_resnet50_fpn(_v2) architecture on a ResNet-18."""
    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet18(), 5, norm_layer=nn.BatchNorm2d if layout == "v2" else None)
    kwargs = dict(min_size=SIZE[0], max_size=SIZE[1], **TRAINING)
    if layout == "v2":
        kwargs.update(rpn_head=RPNHead(256, 3, conv_depth=2), box_head=FastRCNNConvFCHead(
            (256, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d))
    return FasterRCNN(backbone, num_classes=num_classes, **kwargs)


def _shapes(root):
    spec = ShapesSpec(seed=3, num_train=48, num_val=6, height=SIZE[0], width=SIZE[1])
    register_shapes(str(root), spec, names=("tvdet_train", "tvdet_val"))
    return DatasetCatalog.get("tvdet_train"), DatasetCatalog.get("tvdet_val")


def _as_target(record):
    import cv2

    image = cv2.imread(record["file_name"])[:, :, ::-1].copy()  # RGB, as torchvision reads
    boxes = torch.tensor([a["bbox"] for a in record["annotations"]], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([a["category_id"] + 1 for a in record["annotations"]], dtype=torch.int64)
    return torch.from_numpy(image).permute(2, 0, 1), {"boxes": boxes, "labels": labels}


def _train(model, records, iterations: int):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    samples = [_as_target(r) for r in records]
    for _ in range(iterations):
        batch = [samples[i] for i in torch.randint(len(samples), (4,), generator=generator)]
        losses = model([image.float() / 255 for image, _ in batch], [t for _, t in batch])
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


ITERATIONS = 150
# The trained weights are kept here between test runs (CI's two detectron2 routes train the same
# torchvision model): training is torchvision's alone and the file name holds what it depends on.
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "tests"


def _trained_state(layout: str, train) -> dict:
    import torchvision

    code = "".join(inspect.getsource(f) for f in (_torchvision_detector, _shapes, _as_target, _train))
    key = hashlib.sha256(repr((layout, SIZE, TRAINING, ITERATIONS, code, torch.__version__,
                               torchvision.__version__)).encode()).hexdigest()[:12]
    path = CACHE / f"fasterrcnn_r18_fpn_{layout}_shapes_{key}.pth"
    if path.is_file():
        return torch.load(path, weights_only=True)
    state = _train(_torchvision_detector(layout), train, ITERATIONS).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # whole or absent
    return state


# v1 only: training v2's four-conv box head takes minutes on 2 CPU cores; v2 is checked
# network part by network part on random weights below.
@pytest.fixture(scope="module", params=["v1"])
def trained(request, tmp_path_factory):
    """(layout, torchvision model, its saved file, val records)."""
    root = tmp_path_factory.mktemp(f"tvdet_{request.param}")
    train, val = _shapes(root)
    model = _torchvision_detector(request.param)
    model.load_state_dict(_trained_state(request.param, train))
    model.eval()
    path = root / f"fasterrcnn_r18_fpn_{request.param}_shapes.pth"
    torch.save(model.state_dict(), path)
    return request.param, model, path, val


def _detectron2_model(layout: str, weights, extra=()):
    cfg = load_config(CONFIGS[layout], [
        "MODEL.WEIGHTS", str(weights), "MODEL.DEVICE", "cpu", "MODEL.PLUGIN_RESNET.DEPTH", "18",
        "MODEL.ROI_HEADS.NUM_CLASSES", "3", "INPUT.TORCHVISION_RESIZE.MIN_SIZE", str(SIZE[0]),
        "INPUT.TORCHVISION_RESIZE.MAX_SIZE", str(SIZE[1]), "DATASETS.TRAIN", "()", "DATASETS.TEST", "()", *extra])
    model = build_model(cfg).eval()
    PluginCheckpointer.from_config(cfg, model, for_inference=True).load(cfg.MODEL.WEIGHTS)
    return cfg, model


def _predict_detectron2(predictor, image_rgb: torch.Tensor):
    """Through detectron2's own DefaultPredictor (BGR array in, detections at the image's size)."""
    out = predictor(image_rgb.permute(1, 2, 0).numpy()[:, :, ::-1])["instances"]
    return out.pred_boxes.tensor, out.scores, out.pred_classes


def _match(tv_out, d2_out):
    """Fraction of torchvision's detections with a detectron2 one of the same class and IoU >= 0.9,
    and the largest score difference among the matched."""
    boxes, scores, labels = tv_out["boxes"], tv_out["scores"], tv_out["labels"] - 1
    d2_boxes, d2_scores, d2_classes = d2_out
    if len(boxes) == 0:
        return 1.0, 0.0, 0
    iou = box_iou(boxes, d2_boxes) if len(d2_boxes) else torch.zeros(len(boxes), 0)
    iou[labels[:, None] != d2_classes[None, :]] = 0
    best, index = iou.max(1) if iou.shape[1] else (torch.zeros(len(boxes)), None)
    matched = best >= 0.9
    score_diff = (scores[matched] - d2_scores[index[matched]]).abs().max().item() if matched.any() else 0.0
    return matched.float().mean().item(), score_diff, len(boxes)


def _agreement(tv_model, predictor, pictures):
    """Over RGB uint8 CHW pictures: the fraction of torchvision's detections that detectron2's
    predictor matches, the largest score difference among the matched, and their count."""
    matched, diffs, total = 0.0, [0.0], 0
    for picture in pictures:
        with torch.no_grad():
            tv_out = tv_model([picture.float() / 255])[0]
        rate, diff, count = _match(tv_out, _predict_detectron2(predictor, picture))
        matched, total = matched + rate * count, total + count
        diffs.append(diff)
    return (matched / total if total else float("nan")), max(diffs), total


@pytest.mark.slow
def test_imported_detector_gives_torchvisions_features_and_detections(trained, tmp_path):
    layout, tv_model, path, val = trained
    cfg, model = _detectron2_model(layout, path)
    image, _ = _as_target(val[0])
    with torch.no_grad():
        x = tv_model.transform([image.float() / 255])[0]
        tv_features = list(tv_model.backbone(x.tensors).values())
        d2_features = list(model.backbone(model.preprocess_image([{"image": image}]).tensor).values())
    for a, b in zip(tv_features, d2_features):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())

    predictor = DefaultPredictor(cfg)
    # At the test size nothing is resized; at odd sizes the model resizes as torchvision does
    # (TorchvisionGeneralizedRCNN), so both see the same pixels.
    for name, size in (("test size", None), ("odd size", (233, 351)), ("small odd size", (101, 147))):
        pictures = []
        for record in val:
            picture, _ = _as_target(record)
            if size:
                picture = torch.nn.functional.interpolate(picture[None].float(), size=size, mode="bilinear")[0]
                picture = picture.round().clamp(0, 255).to(torch.uint8)
            pictures.append(picture)
        rate, diff, total = _agreement(tv_model, predictor, pictures)
        assert total >= 10, f"the briefly trained {layout} model detects too little ({total}) to compare"
        print(f"{layout} {name}: {total} torchvision detections, {100 * rate:.1f} % matched "
              f"(same class, IoU >= 0.9), max score difference {diff:.2e}")
        assert rate >= 0.95 and diff < 0.02, (name, rate, diff)

FACEMASK_VAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "facemask_coco" / "val2017"


@pytest.mark.slow
@pytest.mark.skipif(not FACEMASK_VAL.is_dir(), reason=f"{FACEMASK_VAL} is absent (a fresh clone has no shared data)")
def test_imported_detector_gives_torchvisions_detections_on_real_photos(trained):
    """Photos of their own sizes (resized up to the test size): the shapes model's detections on
    them are not objects, but both models must give the same ones."""
    import cv2

    layout, tv_model, path, _ = trained
    cfg, _ = _detectron2_model(layout, path, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"])
    predictor = DefaultPredictor(cfg)
    pictures = [torch.from_numpy(cv2.imread(str(f))[:, :, ::-1].copy()).permute(2, 0, 1)
                for f in sorted(FACEMASK_VAL.glob("*.jpg"))[:4]]
    threshold, tv_model.roi_heads.score_thresh = tv_model.roi_heads.score_thresh, 0.01
    try:
        rate, diff, total = _agreement(tv_model, predictor, pictures)
    finally:  # the model is shared by the module's tests
        tv_model.roi_heads.score_thresh = threshold
    print(f"{layout} facemask photos: {total} torchvision detections, {100 * rate:.1f} % matched, "
          f"max score difference {diff:.2e}")
    assert total >= 10 and rate >= 0.95 and diff < 0.02

@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_every_network_part_gives_torchvisions_numbers_on_random_weights(tmp_path, layout):
    from detectron2.structures import Boxes

    tv_model = _torchvision_detector(layout).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in tv_model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    torch.save(tv_model.state_dict(), tmp_path / "tv.pth")
    cfg, model = _detectron2_model(layout, tmp_path / "tv.pth")
    image = torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = tv_model.transform([image.float() / 255])[0]
        tv_features = tv_model.backbone(x.tensors)
        d2_features = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        for a, b in zip(tv_features.values(), d2_features.values()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
        tv_logits, tv_deltas = tv_model.rpn.head(list(tv_features.values()))
        d2_logits, d2_deltas = model.proposal_generator.rpn_head(list(d2_features.values()))
        for a, b in zip(tv_logits + tv_deltas, d2_logits + d2_deltas):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
        tv_anchors = tv_model.rpn.anchor_generator(x, list(tv_features.values()))[0]
        d2_anchors = torch.cat([a.tensor for a in model.proposal_generator.anchor_generator(list(d2_features.values()))])
        assert torch.equal(tv_anchors, d2_anchors)  # torchvision's rounding and strides
        boxes = torch.tensor([[10.0, 12.0, 90.0, 70.0], [100.0, 20.0, 250.0, 180.0], [0.0, 0.0, 40.0, 30.0]])
        pooled = tv_model.roi_heads.box_roi_pool(tv_features, [boxes], x.image_sizes)
        tv_scores, tv_box = tv_model.roi_heads.box_predictor(tv_model.roi_heads.box_head(pooled))
        features = [d2_features[f] for f in model.roi_heads.box_in_features]
        d2_scores, d2_box = model.roi_heads.box_predictor(model.roi_heads.box_head(
            model.roi_heads.box_pooler(features, [Boxes(boxes)])))
    # detectron2's class k is torchvision's k + 1; the background is last, not first.
    torch.testing.assert_close(d2_scores, torch.cat([tv_scores[:, 1:], tv_scores[:, :1]], 1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d2_box, tv_box[:, 4:], rtol=1e-4, atol=1e-5)

    # An odd size: the model resizes as torchvision's transform does (same size, same pixels).
    odd = torch.randint(0, 256, (3, 131, 97), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tv_input = tv_model.transform([odd.float() / 255])[0]
        d2_input = model.preprocess_image([{"image": odd}])
    assert d2_input.image_sizes == tv_input.image_sizes == [(256, 189)]
    torch.testing.assert_close(d2_input.tensor, tv_input.tensors, rtol=0, atol=1e-4)


def test_the_in_model_resize_refuses_a_data_loader_resize_on_top():
    cfg = load_config(CONFIGS["v1"], ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "800",
                                       "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    with pytest.raises(ValueError, match="INPUT.MIN_SIZE_TEST is 800.*resized twice.*INPUT.MIN_SIZE_TEST 0"):
        build_model(cfg)


@pytest.mark.parametrize("layout,builder", [("v1", fasterrcnn_resnet50_fpn), ("v2", fasterrcnn_resnet50_fpn_v2)])
def test_the_published_r50_layouts_load_completely_with_coco_classes(tmp_path, layout, builder):
    torch.manual_seed(0)
    tv_model = builder(weights=None, weights_backbone=None)
    state = tv_model.state_dict()
    path = tmp_path / f"{layout}.pth"
    torch.save(state, path)
    cfg = load_config(CONFIGS[layout], ["MODEL.WEIGHTS", str(path), "MODEL.DEVICE", "cpu",
                                         "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    model = build_model(cfg).eval()
    PluginCheckpointer.from_config(cfg, model, for_inference=True).load(str(path))
    loaded = model.state_dict()
    # "person" (COCO id 1) is detectron2's class 0, "toothbrush" (id 90) its class 79; the
    # background row 0 moves last.
    scores = state["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(loaded["roi_heads.box_predictor.cls_score.weight"][0], scores[1])
    assert torch.equal(loaded["roi_heads.box_predictor.cls_score.weight"][79], scores[90])
    assert torch.equal(loaded["roi_heads.box_predictor.cls_score.weight"][80], scores[0])
    deltas = state["roi_heads.box_predictor.bbox_pred.weight"]
    assert torch.equal(loaded["roi_heads.box_predictor.bbox_pred.weight"][316:320], deltas[360:364])
    assert torch.equal(loaded["backbone.fpn_lateral5.weight"], state["backbone.fpn.inner_blocks.3.0.weight"])
    if layout == "v2":
        assert torch.equal(loaded["roi_heads.box_head.conv4.norm.running_var"],
                           state["roi_heads.box_head.3.1.running_var"])
        assert torch.equal(loaded["proposal_generator.rpn_head.conv.conv1.weight"],
                           state["rpn.head.conv.1.0.weight"])


def test_the_pre_0_13_key_names_of_the_published_v1_file_load_the_same(tmp_path):
    import re

    torch.manual_seed(0)
    state = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    # torchvision < 0.13 saved the FPN and RPN convs without their Conv2dNormActivation level.
    old = {re.sub(r"(inner_blocks|layer_blocks)\.(\d)\.0\.", r"\1.\2.", re.sub(r"rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", k)): v
           for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert "backbone.fpn.inner_blocks.0.weight" in old and "rpn.head.conv.weight" in old
    loaded = []
    for name, weights in (("new", state), ("old", old)):
        torch.save(weights, tmp_path / f"{name}.pth")
        cfg = load_config(CONFIGS["v1"], ["MODEL.WEIGHTS", str(tmp_path / f"{name}.pth"), "MODEL.DEVICE", "cpu",
                                           "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
        model = build_model(cfg)
        PluginCheckpointer.from_config(cfg, model, for_inference=True).load(cfg.MODEL.WEIGHTS)
        loaded.append(model.state_dict())
    for key in loaded[0]:
        assert torch.equal(loaded[0][key], loaded[1][key]), key


def test_a_v2_file_given_to_the_v1_config_is_refused_naming_the_right_config(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "v2.pth"
    torch.save(fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict(), path)
    cfg = load_config(CONFIGS["v1"], ["MODEL.WEIGHTS", str(path), "MODEL.DEVICE", "cpu",
                                       "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    model = build_model(cfg)
    with pytest.raises(CheckpointMismatchError, match="tv_fasterrcnn_r50_fpn_v2.yaml"):
        PluginCheckpointer.from_config(cfg, model, for_inference=True).load(str(path))
