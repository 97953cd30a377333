"""Our results next to a published one: one table with ours, the reference and the difference."""
import logging
import math
from typing import Dict, List, Optional

from detectron2.evaluation import DatasetEvaluator

from .references import Reference, get_reference
from .tables import markdown_table, write_table

__all__ = ["comparison_rows", "compare_with_reference", "ReferenceComparison"]

logger = logging.getLogger(__name__)

HEADER = ["metric", "ours", "reference", "difference"]


def comparison_rows(ours: Dict[str, float], reference: Reference) -> List[list]:
    """Rows (metric, ours, reference, ours - reference), in the reference's order.

    A metric we did not compute shows as missing (and no difference), never as 0.
    """
    rows = []
    for key, ref_value in reference.values.items():
        value = ours.get(key)
        value = None if value is None or not math.isfinite(value) else float(value)
        rows.append([key, value, ref_value, None if value is None else value - ref_value])
    return rows


def compare_with_reference(
    ours: Dict[str, float],
    reference_key: str,
    dataset_name: str = "",
    output_folder: Optional[str] = None,
) -> List[list]:
    """Log the comparison table and save it as ``reference_comparison.{md,csv}``.

    Args:
        ours: our box results (e.g. ``results["bbox"]``), in percent.
        reference_key: a key of :data:`fpn_plugin.evaluation.references.REFERENCES`.
        dataset_name: the dataset we evaluated, to warn when it is not the reference's.
        output_folder: where to save the table; not saved when None.

    Returns:
        The table rows.
    """
    ref = get_reference(reference_key)
    rows = comparison_rows(ours, ref)
    title = f"Ours on {dataset_name or '?'} vs {ref.title}"
    logger.info("%s\n(source: %s; metric: %s)\n%s", title, ref.source, ref.metric,
                markdown_table(HEADER, rows))
    if dataset_name and dataset_name != ref.dataset:
        logger.warning(
            "The reference %r was measured on %r but we evaluated %r: the difference is not a "
            "like-for-like comparison.", ref.key, ref.dataset, dataset_name,
        )
    missing = [r[0] for r in rows if r[1] is None]
    if missing:
        logger.warning("Our results have no value for %s (not computed or NaN).", missing)
    if output_folder:
        paths = write_table(output_folder, "reference_comparison", HEADER, rows, title)
        with open(paths[0], "a") as f:
            f.write(f"\nReference: {ref.source}. Metric: {ref.metric}. Dataset: {ref.dataset}.\n")
            if ref.note:
                f.write(f"Note: {ref.note}\n")
    return rows


class ReferenceComparison(DatasetEvaluator):
    """Wraps an evaluator and, after it evaluates, prints and saves ours next to a reference."""

    def __init__(self, evaluator: DatasetEvaluator, reference_key: str, dataset_name: str,
                 output_folder: Optional[str] = None):
        get_reference(reference_key)  # fail at build time on an unknown key, not after testing
        self.evaluator = evaluator
        self._reference_key = reference_key
        self._dataset_name = dataset_name
        self._output_folder = output_folder

    def reset(self):
        self.evaluator.reset()

    def process(self, inputs, outputs):
        self.evaluator.process(inputs, outputs)

    def evaluate(self):
        results = self.evaluator.evaluate()
        if results and "bbox" in results:
            compare_with_reference(results["bbox"], self._reference_key, self._dataset_name,
                                   self._output_folder)
        return results
