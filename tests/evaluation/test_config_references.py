"""Every TEST.REFERENCE named by a config in configs/ is a published result we have."""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from fpn_plugin import add_fpn_plugin_config
from fpn_plugin.evaluation.references import get_reference

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml") if not p.name.startswith("Base-"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_reference_is_known(path):
    cfg = get_cfg()
    add_fpn_plugin_config(cfg)
    cfg.merge_from_file(str(path))
    if cfg.TEST.REFERENCE:
        reference = get_reference(cfg.TEST.REFERENCE)
        assert reference.values and reference.source


def test_the_reproduction_configs_name_their_target():
    named = {p.stem for p in CONFIGS if "REFERENCE" in p.read_text()}
    assert {"fpn_r50", "vgg16_voc07", "r50_c4_voc07", "r101_c4_voc07", "r152_c4_voc07"} <= named
