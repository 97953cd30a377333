"""Published results to compare ours with, each with its source and its metric.

A config names the result it targets with ``TEST.REFERENCE: <key>``; the evaluator then
prints our numbers next to it (see :mod:`fpn_plugin.evaluation.compare`). Values are
percentages keyed like our evaluators' results, so ``AP50_07-cat`` is compared with our
``AP50_07-cat``. Only numbers copied from the cited source are here; where a source gives no
per-class or per-size numbers, there are none.

List them with ``python -m fpn_plugin.evaluation.references``.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

__all__ = ["Reference", "REFERENCES", "get_reference", "VOC_CLASSES"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


@dataclass(frozen=True)
class Reference:
    """One published result.

    Attributes:
        key: the name configs use in ``TEST.REFERENCE``.
        title: what was trained, on what.
        source: where the numbers are published (paper table or repository file at a commit).
        dataset: the evaluation set the numbers are on.
        metric: how they were computed, in words.
        values: metric name (as in our results) -> published value in percent.
        note: caveats when comparing.
    """

    key: str
    title: str
    source: str
    dataset: str
    metric: str
    values: Dict[str, float] = field(default_factory=dict)
    note: str = ""


def _voc(prefix: str, mean: float, per_class: Sequence[float]) -> Dict[str, float]:
    values = {prefix: mean}
    values.update({f"{prefix}-{c}": v for c, v in zip(VOC_CLASSES, per_class)})
    return values


def _voc_by_name(prefix: str, mean: float, per_class: Dict[str, float]) -> Dict[str, float]:
    assert set(per_class) == set(VOC_CLASSES), "a VOC table must name the 20 classes"
    return _voc(prefix, mean, [per_class[c] for c in VOC_CLASSES])


_FASTER_RCNN_PAPER = (
    "Ren, He, Girshick, Sun: Faster R-CNN: Towards Real-Time Object Detection with Region "
    "Proposal Networks (NIPS 2015; arXiv:1506.01497v3), per-class PASCAL VOC 2007 test table "
    "(Table 6), rows 'RPN 300 07' and 'RPN 300 07+12'"
)
_TRZY = "github.com/trzy/FasterRCNN, README.md at commit 8bfdd870bf058efcffe52a5e6d5ffc4f4a2e3e13"
_TRZY_METRIC = (
    "AP50 as the area under the interpolated precision/recall curve, computed by the "
    "repository's own code (pytorch/FasterRCNN/statistics.py)"
)
_TRZY_NOTE = (
    "Trained on VOC2007 trainval (5011 images), 14 epochs. The repository matches detections "
    "with its own code, not the devkit's; compare with our area AP50."
)
_FPN_PAPER = (
    "Lin, Dollar, Girshick, He, Hariharan, Belongie: Feature Pyramid Networks for Object "
    "Detection (CVPR 2017; arXiv:1612.03144), Table 3 (COCO minival, ResNet-50)"
)


def _trzy(backbone: str, mean: float, column: Dict[str, float]) -> Reference:
    return Reference(
        key=f"trzy_{backbone.lower().replace('-', '')}_voc07",
        title=f"trzy/FasterRCNN (PyTorch), {backbone} backbone, VOC2007 trainval",
        source=_TRZY,
        dataset="voc_2007_test",
        metric=_TRZY_METRIC,
        values=_voc_by_name("AP50_area", mean, column),
        note=_TRZY_NOTE,
    )


# trzy/FasterRCNN README, per-class AP columns (VGG-16, ResNet50, ResNet101, ResNet152), in the
# README's row order; its "Mean" row is copied as published (for VGG-16 the per-class values
# average 70.88, not the published 71.0; the other three columns agree with their means).
_TRZY_ROWS = {
    "cat": (84.6, 87.3, 90.1, 89.0), "car": (84.0, 85.5, 88.5, 88.4),
    "horse": (82.3, 84.8, 87.4, 87.3), "bus": (81.8, 84.1, 85.9, 86.6),
    "bicycle": (80.9, 81.2, 84.8, 85.8), "dog": (80.2, 81.0, 83.8, 84.5),
    "person": (78.5, 79.8, 83.3, 83.5), "train": (77.2, 79.8, 82.3, 82.8),
    "motorbike": (76.6, 79.5, 81.3, 82.3), "cow": (75.8, 79.0, 79.6, 81.2),
    "aeroplane": (74.9, 74.9, 78.7, 78.5), "tvmonitor": (73.1, 73.8, 78.1, 78.5),
    "sheep": (67.6, 71.7, 77.2, 76.0), "bird": (66.0, 70.6, 76.1, 72.8),
    "diningtable": (65.9, 69.9, 71.9, 72.1), "sofa": (65.1, 67.2, 65.3, 67.4),
    "boat": (57.4, 59.9, 64.2, 62.9), "bottle": (55.6, 57.4, 60.0, 56.7),
    "chair": (49.5, 50.3, 56.0, 55.7), "pottedplant": (40.6, 46.9, 49.1, 47.8),
}
_TRZY_MEANS = (71.0, 73.2, 76.2, 76.0)

REFERENCES: Dict[str, Reference] = {}


def _add(ref: Reference) -> None:
    REFERENCES[ref.key] = ref


_add(Reference(
    key="faster_rcnn_vgg16_voc07",
    title="Faster R-CNN, VGG-16, RPN 300 proposals, trained on VOC2007 trainval",
    source=_FASTER_RCNN_PAPER,
    dataset="voc_2007_test",
    metric="VOC2007 11-point AP50, difficult objects ignored (py-faster-rcnn's voc_eval)",
    values=_voc("AP50_07", 69.9, [70.0, 80.6, 70.1, 57.3, 49.9, 78.2, 80.4, 82.0, 52.2, 75.3,
                                  67.2, 80.3, 79.8, 75.0, 76.3, 39.1, 68.3, 67.3, 81.1, 67.6]),
))
_add(Reference(
    key="faster_rcnn_vgg16_voc0712",
    title="Faster R-CNN, VGG-16, RPN 300 proposals, trained on VOC2007+2012 trainval",
    source=_FASTER_RCNN_PAPER,
    dataset="voc_2007_test",
    metric="VOC2007 11-point AP50, difficult objects ignored (py-faster-rcnn's voc_eval)",
    values=_voc("AP50_07", 73.2, [76.5, 79.0, 70.9, 65.5, 52.1, 83.1, 84.7, 86.4, 52.0, 81.9,
                                  65.7, 84.8, 84.6, 77.5, 76.7, 38.8, 73.6, 73.9, 83.0, 72.6]),
))
for _i, _backbone in enumerate(("VGG-16", "ResNet50", "ResNet101", "ResNet152")):
    _add(_trzy(_backbone, _TRZY_MEANS[_i], {c: v[_i] for c, v in _TRZY_ROWS.items()}))
_add(Reference(
    key="fpn_paper_r50_faster_rcnn_minival",
    title="Faster R-CNN on FPN, ResNet-50, RPN proposals (Table 3 row (c))",
    source=_FPN_PAPER,
    dataset="coco_2014_minival",
    metric="COCO box AP (pycocotools)",
    values={"AP50": 56.9, "AP": 33.9, "APs": 17.8, "APm": 37.7, "APl": 45.8},
    note="Proposals from an RPN on {Pk}, 2fc box head; see the table's caption in the paper for "
         "how RPN and detector were trained.",
))
_add(Reference(
    key="fpn_paper_r50_c4_baseline_minival",
    title="Faster R-CNN baseline on conv4, ResNet-50 (Table 3 row (a))",
    source=_FPN_PAPER,
    dataset="coco_2014_minival",
    metric="COCO box AP (pycocotools)",
    values={"AP50": 54.7, "AP": 31.9, "APs": 15.7, "APm": 36.5, "APl": 45.5},
))
_add(Reference(
    key="fpn_paper_r50_c5_baseline_minival",
    title="Faster R-CNN baseline on conv5, ResNet-50, 2fc head (Table 3 row (b))",
    source=_FPN_PAPER,
    dataset="coco_2014_minival",
    metric="COCO box AP (pycocotools)",
    values={"AP50": 52.9, "AP": 28.8, "APs": 11.9, "APm": 32.4, "APl": 43.4},
))
_add(Reference(
    key="detectron2_r50_fpn_1x",
    title="detectron2 model zoo: faster_rcnn_R_50_FPN_1x",
    source="github.com/facebookresearch/detectron2, MODEL_ZOO.md (COCO Object Detection Baselines)",
    dataset="coco_2017_val",
    metric="COCO box AP (pycocotools)",
    values={"AP": 37.9},
    note="90k iterations at batch 16 (1x schedule), ImageNet-pretrained MSRA R-50.",
))
_add(Reference(
    key="mmdetection_r50_fpn_1x",
    title="MMDetection: faster-rcnn_r50_fpn_1x_coco (pytorch style)",
    source="github.com/open-mmlab/mmdetection, configs/faster_rcnn/README.md",
    dataset="coco_2017_val",
    metric="COCO box AP (pycocotools)",
    values={"AP": 37.4},
    note="12 epochs at batch 16, torchvision-pretrained R-50.",
))

_add(Reference(
    key="torchvision_fasterrcnn_resnet50_fpn",
    title="torchvision: fasterrcnn_resnet50_fpn (FasterRCNN_ResNet50_FPN_Weights.COCO_V1)",
    source="pytorch.org/vision/stable/models/generated/torchvision.models.detection.fasterrcnn_resnet50_fpn.html",
    dataset="coco_2017_val",
    metric="COCO box AP (pycocotools), torchvision's references/detection",
    values={"AP": 37.0},
    note="torchvision's own weights converted (configs/tv_fasterrcnn_r50_fpn.yaml); detectron2 "
         "resizes with PIL on uint8 where torchvision interpolates floats.",
))
_add(Reference(
    key="torchvision_fasterrcnn_resnet50_fpn_v2",
    title="torchvision: fasterrcnn_resnet50_fpn_v2 (FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1)",
    source="pytorch.org/vision/stable/models/generated/torchvision.models.detection.fasterrcnn_resnet50_fpn_v2.html",
    dataset="coco_2017_val",
    metric="COCO box AP (pycocotools), torchvision's references/detection",
    values={"AP": 46.7},
    note="torchvision's own weights converted (configs/tv_fasterrcnn_r50_fpn_v2.yaml).",
))


def get_reference(key: str) -> Reference:
    """The reference named ``key``, or a ValueError listing the known ones."""
    if key not in REFERENCES:
        raise ValueError(
            f"TEST.REFERENCE is {key!r}, which is not a known published result. Known: "
            f"{sorted(REFERENCES)} (see fpn_plugin/evaluation/references.py)."
        )
    return REFERENCES[key]


def _main(argv: List[str] = None) -> None:
    for ref in REFERENCES.values():
        headline = {k: v for k, v in ref.values.items() if "-" not in k}
        print(f"{ref.key}: {ref.title}\n    {headline} on {ref.dataset}; {ref.metric}\n"
              f"    source: {ref.source}")


if __name__ == "__main__":
    _main()
