"""``build_evaluator``: the evaluator that fits a dataset, chosen from its metadata."""
import logging

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator

from .coco import COCODetectionEvaluator
from .voc import VOCDetectionEvaluator

__all__ = ["build_evaluator", "evaluator_kind"]

logger = logging.getLogger(__name__)

_VOC_TYPES = {"pascal_voc", "voc"}
_COCO_TYPES = {"coco"}


def evaluator_kind(dataset_name: str, override: str = "") -> str:
    """"voc" or "coco": which metric a dataset is evaluated with.

    ``override`` ("voc" or "coco", from ``TEST.EVALUATOR``) wins. Otherwise the dataset's
    ``evaluator_type`` metadata decides ("pascal_voc" for detectron2's builtin VOC and for
    VOC-style custom data, "coco" for COCO JSON data); a dataset with VOCdevkit metadata
    (``dirname`` and ``split``) is VOC; anything else gets the COCO metric, which works for
    any detection dataset.
    """
    if override:
        kind = override.lower()
        if kind not in ("voc", "coco"):
            raise ValueError(
                f"TEST.EVALUATOR is {override!r}; use 'voc', 'coco' or '' (chosen from the "
                "dataset)."
            )
        return kind
    meta = MetadataCatalog.get(dataset_name)
    etype = meta.get("evaluator_type", "")
    if etype in _VOC_TYPES or (not etype and meta.get("dirname") and meta.get("split")):
        return "voc"
    if etype and etype not in _COCO_TYPES:
        logger.warning(
            "Dataset %r has evaluator_type %r, which fpn_plugin does not know; using the COCO "
            "box metric.", dataset_name, etype,
        )
    return "coco"


def build_evaluator(cfg, dataset_name: str, output_folder: str = None) -> DatasetEvaluator:
    """The evaluator for ``dataset_name``: VOC (both AP50 metrics) or COCO style.

    If ``cfg.TEST.REFERENCE`` names a published result (see
    :mod:`fpn_plugin.evaluation.references`), the evaluator also prints ours next to it and
    saves the comparison in ``output_folder``.

    Args:
        cfg: the config (``TEST.EVALUATOR`` and ``TEST.REFERENCE`` are read when present).
        dataset_name: a registered dataset.
        output_folder: where the evaluator writes its tables and predictions.

    Returns:
        DatasetEvaluator
    """
    test_cfg = cfg.get("TEST", {}) if cfg is not None else {}
    kind = evaluator_kind(dataset_name, test_cfg.get("EVALUATOR", ""))
    if kind == "voc":
        evaluator = VOCDetectionEvaluator(dataset_name, output_dir=output_folder)
    else:
        evaluator = COCODetectionEvaluator(dataset_name, output_dir=output_folder)
    reference = test_cfg.get("REFERENCE", "")
    if reference:
        from .compare import ReferenceComparison

        evaluator = ReferenceComparison(evaluator, reference, dataset_name, output_folder)
    return evaluator
