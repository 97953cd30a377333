"""Whether an exported file gives the eager model's detections: matching and the check."""
from typing import Callable, Optional, Tuple

import torch

from .tracing import ExportError, raw_inference

__all__ = ["compare_detections", "verify"]

# What the export-time check allows between the exported and the eager model (pixels, score).
BOX_ATOL, SCORE_ATOL = 0.05, 1e-4


def compare_detections(boxes_a, scores_a, classes_a, boxes_b, scores_b, classes_b) -> Optional[dict]:
    """The largest box and score differences between matched detections, or None.

    Detections are matched one to one within a class, each of ``a`` (best first) to the
    closest unmatched one of ``b``: two nearly equal scores may come in either order, which
    is not a difference.

    Returns:
        ``{"count": N, "max_box_diff": pixels, "max_score_diff": ...}``; None when the counts
        differ or a detection finds no partner of its class.
    """
    boxes_a, boxes_b = torch.as_tensor(boxes_a).float(), torch.as_tensor(boxes_b).float()
    scores_a, scores_b = torch.as_tensor(scores_a).float(), torch.as_tensor(scores_b).float()
    classes_a, classes_b = torch.as_tensor(classes_a).long(), torch.as_tensor(classes_b).long()
    if len(boxes_a) != len(boxes_b):
        return None
    box_diff = (boxes_a[:, None, :] - boxes_b[None, :, :]).abs().amax(dim=2)
    score_diff = (scores_a[:, None] - scores_b[None, :]).abs()
    cost = box_diff + score_diff
    cost[classes_a[:, None] != classes_b[None, :]] = float("inf")
    worst_box, worst_score, free = 0.0, 0.0, torch.ones(len(boxes_b), dtype=torch.bool)
    for i in range(len(boxes_a)):
        row = torch.where(free, cost[i], torch.full_like(cost[i], float("inf")))
        j = int(row.argmin()) if len(row) else -1
        if j < 0 or not torch.isfinite(row[j]):
            return None
        free[j] = False
        worst_box = max(worst_box, float(box_diff[i, j]))
        worst_score = max(worst_score, float(score_diff[i, j]))
    return {"count": len(boxes_a), "max_box_diff": worst_box, "max_score_diff": worst_score}


def check_images(image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The sample and another size (its transpose, or a crop when it is square)."""
    other = image.transpose(1, 2) if image.shape[1] != image.shape[2] else image[:, :, : image.shape[2] * 3 // 4]
    return image, other.contiguous()


def verify(model, run: Callable, image: torch.Tensor) -> dict:
    """Compare the exported model with the eager one on the sample and on another size.

    Returns:
        dict: the largest box and score differences over both images.

    Raises:
        ExportError: the detections differ (count, classes, or beyond BOX_ATOL/SCORE_ATOL).
    """
    worst = {"max_box_diff": 0.0, "max_score_diff": 0.0}
    for x in check_images(image):
        with torch.no_grad():
            eager = raw_inference(model, [{"image": x}])[0].to("cpu")
        boxes, classes, scores, _ = run(x)
        diff = compare_detections(eager.pred_boxes.tensor, eager.scores, eager.pred_classes,
                                  boxes, scores, classes)
        if diff is None or diff["max_box_diff"] > BOX_ATOL or diff["max_score_diff"] > SCORE_ATOL:
            raise ExportError(
                f"the exported model's detections on a {tuple(x.shape[1:])} input differ from "
                f"the eager model's ({len(eager)} eager, {len(scores)} exported; {diff}): the "
                "file was removed"
            )
        worst = {k: max(worst[k], diff[k]) for k in worst}
    return worst
