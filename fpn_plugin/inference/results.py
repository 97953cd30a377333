"""Detections filtered as asked, and written as COCO results that pycocotools loads."""
from typing import List, Optional, Sequence

from detectron2.structures import BoxMode, Instances

__all__ = ["select", "to_coco_results", "class_ids_for_names"]


def class_ids_for_names(names: Sequence[str], class_names: Optional[Sequence[str]]) -> List[int]:
    """Contiguous ids of the named classes; an unknown name is an error listing the known ones."""
    if not class_names:
        raise ValueError("--classes needs class names, and this model has none (train with fpn_plugin's trainer, or register the dataset)")
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ValueError(f"unknown class name(s) {unknown}; the model's classes are {list(class_names)}")
    return [list(class_names).index(n) for n in names]


def select(
    instances: Instances,
    score_threshold: float = 0.0,
    class_ids: Optional[Sequence[int]] = None,
    max_detections: Optional[int] = None,
) -> Instances:
    """Keep detections at or above the threshold, of the given classes, best ``max_detections``."""
    keep = instances.scores >= score_threshold
    if class_ids is not None:
        wanted = instances.pred_classes.new_tensor(list(class_ids))
        keep &= (instances.pred_classes[:, None] == wanted[None, :]).any(dim=1)
    instances = instances[keep]
    if max_detections is not None and len(instances) > max_detections:
        instances = instances[instances.scores.argsort(descending=True)[:max_detections]]
    return instances


def to_coco_results(
    instances: Instances,
    image_id: int,
    file_name: str,
    class_names: Optional[Sequence[str]] = None,
    category_ids: Optional[Sequence[int]] = None,
) -> List[dict]:
    """COCO results entries (XYWH boxes), with the file name and class name alongside.

    Args:
        category_ids: the dataset category id of each contiguous class id; by default the
            contiguous id itself.
    """
    boxes = BoxMode.convert(instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    results = []
    for box, score, cls in zip(boxes.tolist(), instances.scores.tolist(), instances.pred_classes.tolist()):
        results.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "category_id": category_ids[cls] if category_ids is not None else cls,
                "category_name": class_names[cls] if class_names else str(cls),
                # Unrounded, as COCOEvaluator writes them: rounding moves a box across an IoU
                # threshold or ties two scores, and then pycocotools' AP differs from the evaluator's.
                "bbox": box,
                "score": score,
            }
        )
    return results
