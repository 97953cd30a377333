"""Published reference tables and the comparison printed next to ours."""
import re

import pytest

import fpn_plugin  # noqa: F401
from detectron2.config import get_cfg

from fpn_plugin.evaluation import build_evaluator
from fpn_plugin.evaluation.compare import ReferenceComparison, compare_with_reference
from fpn_plugin.evaluation.references import REFERENCES, VOC_CLASSES, get_reference


@pytest.mark.parametrize("key,prefix", [("faster_rcnn_vgg16_voc07", "AP50_07"),
                                        ("faster_rcnn_vgg16_voc0712", "AP50_07"),
                                        ("trzy_resnet50_voc07", "AP50_area")])
def test_per_class_tables_are_consistent_with_their_mean(key, prefix):
    ref = get_reference(key)
    per_class = [ref.values[f"{prefix}-{c}"] for c in VOC_CLASSES]
    # The published mean is the mean of the published per-class values, up to rounding.
    assert sum(per_class) / 20 == pytest.approx(ref.values[prefix], abs=0.051)


def test_headline_numbers():
    assert get_reference("faster_rcnn_vgg16_voc07").values["AP50_07"] == 69.9
    assert get_reference("detectron2_r50_fpn_1x").values == {"AP": 37.9}
    assert get_reference("mmdetection_r50_fpn_1x").values == {"AP": 37.4}
    assert get_reference("fpn_paper_r50_faster_rcnn_minival").values["AP"] == 33.9
    assert all(r.source and r.dataset and r.metric for r in REFERENCES.values())


def test_unknown_reference_lists_the_known_ones():
    with pytest.raises(ValueError, match="not a known published result.*detectron2_r50_fpn_1x"):
        get_reference("detectron2_r50_fpn_3x")


def test_comparison_table_is_saved(tmp_path):
    ours = {"AP": 36.4, "AP50": 57.0, "APs": float("nan")}
    rows = compare_with_reference(ours, "fpn_paper_r50_faster_rcnn_minival", "coco_2014_minival",
                                  str(tmp_path))
    by_metric = {r[0]: r for r in rows}
    assert by_metric["AP"][1:] == [36.4, 33.9, pytest.approx(2.5)]
    assert by_metric["AP50"][3] == pytest.approx(0.1)
    assert by_metric["APs"][1] is None and by_metric["APs"][3] is None  # NaN is not a number
    csv_lines = (tmp_path / "reference_comparison.csv").read_text().splitlines()
    assert csv_lines[0] == "metric,ours,reference,difference"
    assert csv_lines[1].startswith("AP50,57.0,56.9,0.1")
    md = re.sub(" +", " ", (tmp_path / "reference_comparison.md").read_text())  # cells, not padding
    assert "| AP | 36.40 | 33.90 | 2.50 |" in md and "arXiv:1612.03144" in md


def test_build_evaluator_wraps_when_the_config_names_a_reference():
    cfg = get_cfg()
    fpn_plugin.add_fpn_plugin_config(cfg)
    cfg.TEST.REFERENCE = "faster_rcnn_vgg16_voc07"
    ev = build_evaluator(cfg, "voc_2007_test", None)
    assert isinstance(ev, ReferenceComparison)
    cfg.TEST.REFERENCE = "no_such_result"
    with pytest.raises(ValueError, match="no_such_result"):
        build_evaluator(cfg, "voc_2007_test", None)
