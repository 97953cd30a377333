"""Count predictions before evaluating, and explain results that are empty or NaN.

"AP is NaN" or "AP is 0" with no reason is a common dead end; these messages say which case
it is and what to check.
"""
from collections import Counter
from typing import Dict, Iterable, List, Sequence

__all__ = [
    "PredictionCounter",
    "no_predictions_message",
    "size_buckets",
    "empty_bucket_messages",
]

# COCO's area ranges (pycocotools' COCOeval.Params): small < 32^2 <= medium < 96^2 <= large.
SMALL_MAX, MEDIUM_MAX = 32**2, 96**2


class PredictionCounter:
    """Counts images, predictions and predictions per class as an evaluator sees them."""

    def __init__(self):
        self.num_images = 0
        self.num_predictions = 0
        self.images_without_predictions = 0
        self.per_class = Counter()

    def add(self, outputs: Iterable[Dict]) -> None:
        """Count the ``instances`` of a batch of model outputs."""
        for output in outputs:
            self.num_images += 1
            instances = output.get("instances")
            n = 0 if instances is None else len(instances)
            self.num_predictions += n
            if n == 0:
                self.images_without_predictions += 1
            else:
                self.per_class.update(instances.pred_classes.tolist())

    @classmethod
    def merged(cls, counters: Iterable["PredictionCounter"]) -> "PredictionCounter":
        """One counter holding the counts of several (e.g. one per process)."""
        total = cls()
        for c in counters:
            total.num_images += c.num_images
            total.num_predictions += c.num_predictions
            total.images_without_predictions += c.images_without_predictions
            total.per_class.update(c.per_class)
        return total

    def summary(self, class_names: Sequence[str]) -> str:
        """One line for the log: totals and the classes that got no prediction."""
        unpredicted = [n for i, n in enumerate(class_names) if self.per_class[i] == 0]
        text = (
            f"{self.num_predictions} predictions on {self.num_images} images "
            f"({self.images_without_predictions} images without any)"
        )
        if self.num_predictions and unpredicted:
            text += f"; no prediction at all for {len(unpredicted)} class(es): {unpredicted}"
        return text


def no_predictions_message(dataset_name: str, num_images: int) -> str:
    """Why there may be no predictions, and what to check."""
    if num_images == 0:
        return (
            f"The evaluator of {dataset_name!r} received no images: the test loader was empty. "
            "Check DATASETS.TEST and that the dataset has images."
        )
    return (
        f"The model made no predictions on the {num_images} images of {dataset_name!r}, so "
        "every AP is 0 (VOC) or NaN (COCO): there is nothing to rank. Likely causes: the "
        "model is untrained or its loss diverged (look at total_loss in metrics.json); "
        "MODEL.WEIGHTS did not load (look for 'not found in checkpoint' / 'Some model "
        "parameters' in the log); MODEL.ROI_HEADS.SCORE_THRESH_TEST is above every score "
        "(try 0.0 to see what the model predicts); MODEL.ROI_HEADS.NUM_CLASSES differs from "
        "the weights' classes."
    )


def size_buckets(areas: Iterable[float]) -> Dict[str, int]:
    """How many ground-truth boxes fall in COCO's small, medium and large area ranges."""
    counts = {"small": 0, "medium": 0, "large": 0}
    for a in areas:
        counts["small" if a < SMALL_MAX else "medium" if a < MEDIUM_MAX else "large"] += 1
    return counts


def empty_bucket_messages(dataset_name: str, buckets: Dict[str, int]) -> List[str]:
    """One explanation per empty size range: its AP is undefined (NaN), not a failure."""
    metric = {"small": "APs", "medium": "APm", "large": "APl"}
    limits = {"small": "area < 32^2", "medium": "32^2 <= area < 96^2", "large": "area >= 96^2"}
    return [
        f"{metric[name]} is NaN for {dataset_name!r}: its ground truth has no {name} objects "
        f"({limits[name]} pixels), so that AP is undefined, not 0."
        for name, count in buckets.items()
        if count == 0
    ]
