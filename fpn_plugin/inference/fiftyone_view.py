"""Ground truth and predictions in FiftyOne, and FiftyOne's detection evaluation.

FiftyOne runs with its own MongoDB (installed by ``make install``); nothing here needs the app.
FiftyOne boxes are ``[x, y, w, h]`` relative to the image size; detectron2's are absolute.
"""
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..optional import require

__all__ = [
    "detectron2_to_fiftyone",
    "images_to_fiftyone",
    "add_coco_results",
    "add_coco_ground_truth",
    "evaluate_detections",
]


def _fo():
    # FiftyOne is imported on use: it is slow to import, starts a database, and is optional.
    return require("fiftyone", "FiftyOne export (predict.py --fiftyone, fpn_plugin.inference.fiftyone_view)")


def _detection(label: str, xywh: Sequence[float], width: int, height: int, score=None):
    x, y, w, h = xywh
    box = [x / width, y / height, w / width, h / height]
    return _fo().Detection(label=label, bounding_box=box, confidence=score)


def _new_dataset(name: str, overwrite: bool):
    fo = _fo()
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"a FiftyOne dataset named {name!r} exists; pass overwrite=True or another name")
        fo.delete_dataset(name)
    return fo.Dataset(name)


def detectron2_to_fiftyone(
    dataset_name: str, fo_name: Optional[str] = None, gt_field: str = "ground_truth", overwrite: bool = False
):
    """Put a registered detectron2 dataset (images and ground-truth boxes) into FiftyOne.

    Returns:
        fiftyone.core.dataset.Dataset: one sample per image, boxes in ``gt_field``.
    """
    fo = _fo()
    classes = MetadataCatalog.get(dataset_name).thing_classes
    dataset = _new_dataset(fo_name or dataset_name, overwrite)
    samples = []
    for record in DatasetCatalog.get(dataset_name):
        w, h = record["width"], record["height"]
        detections = []
        for ann in record.get("annotations", []):
            xywh = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
            detections.append(_detection(classes[ann["category_id"]], xywh, w, h))
        sample = fo.Sample(filepath=record["file_name"], metadata=fo.ImageMetadata(width=w, height=h))
        sample[gt_field] = fo.Detections(detections=detections)
        samples.append(sample)
    dataset.add_samples(samples)
    return dataset


def _set_detections(dataset, field: str, by_file: Mapping[str, List]) -> int:
    """Give every sample ``field``, from ``by_file`` (keyed by file name); count the matched."""
    fo = _fo()
    count = 0
    for sample in dataset.iter_samples(autosave=True):
        name = sample.filepath.rsplit("/", 1)[-1]
        sample[field] = fo.Detections(detections=by_file.get(name, []))
        count += name in by_file
    return count


def images_to_fiftyone(paths: Sequence[str], sizes: Mapping[str, tuple], fo_name: str, overwrite: bool = False):
    """A FiftyOne dataset of image files; ``sizes`` maps file names to (height, width)."""
    fo = _fo()
    dataset = _new_dataset(fo_name, overwrite)
    samples = []
    for path in paths:
        h, w = sizes[path.rsplit("/", 1)[-1]]
        samples.append(fo.Sample(filepath=path, metadata=fo.ImageMetadata(width=w, height=h)))
    dataset.add_samples(samples)
    return dataset


def add_coco_results(
    dataset, results: Iterable[Mapping], sizes: Mapping[str, tuple], field: str = "predictions"
) -> int:
    """Add predictions in COCO results format (as ``predict.py`` writes) to a FiftyOne dataset.

    Args:
        results: entries with ``file_name``, ``category_name``, ``bbox`` (XYWH) and ``score``.
        sizes: ``{file name: (height, width)}`` of the predicted images.

    Returns:
        int: the number of samples that received predictions; each sample gets the field, empty
        when it has no detection.
    """
    by_file: Dict[str, List] = {}
    for r in results:
        h, w = sizes[r["file_name"]]
        by_file.setdefault(r["file_name"], []).append(
            _detection(r["category_name"], r["bbox"], w, h, r["score"])
        )
    return _set_detections(dataset, field, by_file)


def add_coco_ground_truth(dataset, coco_json: Mapping, field: str = "ground_truth") -> int:
    """Add the boxes of a COCO ground-truth dict, matched to samples by file name."""
    names = {c["id"]: c["name"] for c in coco_json["categories"]}
    images = {im["id"]: im for im in coco_json["images"]}
    by_file: Dict[str, List] = {im["file_name"].rsplit("/", 1)[-1]: [] for im in images.values()}
    for ann in coco_json["annotations"]:
        im = images[ann["image_id"]]
        by_file[im["file_name"].rsplit("/", 1)[-1]].append(
            _detection(names[ann["category_id"]], ann["bbox"], im["width"], im["height"])
        )
    return _set_detections(dataset, field, by_file)


def evaluate_detections(dataset, pred_field: str = "predictions", gt_field: str = "ground_truth",
                        eval_key: str = "eval", iou: float = 0.5, print_report: bool = True):
    """Run FiftyOne's COCO-style detection evaluation; print its mAP and per-class report.

    Returns:
        fiftyone.utils.eval.detection.DetectionResults: ``.mAP()``, ``.report()``, ...
    """
    results = dataset.evaluate_detections(
        pred_field, gt_field=gt_field, eval_key=eval_key, iou=iou, compute_mAP=True
    )
    if print_report:
        print(f"FiftyOne mAP (COCO-style, IoU 0.50:0.95): {results.mAP():.4f}")
        results.print_report()
    return results
