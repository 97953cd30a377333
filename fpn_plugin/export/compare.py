"""How far two sets of detections of one image are apart (exported vs eager)."""
from typing import Optional

import torch

__all__ = ["compare_detections"]


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
