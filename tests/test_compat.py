"""fpn_plugin.compat: detectron2 0.6 (PyPI, no compiled ops) and git main on today's Python, NumPy
and Pillow; fixes decided from what the installed detectron2 does, never from its version."""
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fpn_plugin
from fpn_plugin import compat

COMPAT_FILE = Path(compat.__file__)


def test_detectron2_subpackages_import_after_fpn_plugin():
    import detectron2.checkpoint  # noqa: F401
    import detectron2.data  # noqa: F401
    import detectron2.engine  # noqa: F401
    import detectron2.evaluation  # noqa: F401
    import detectron2.modeling  # noqa: F401
    import detectron2.utils.visualizer  # noqa: F401
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    assert Path(path).is_file()


@pytest.mark.skipif(compat.has_compiled_ops(), reason="detectron2 has its compiled ops here")
def test_rotated_box_op_raises_explanatory_error():
    from detectron2.layers import nms_rotated

    boxes = torch.tensor([[10.0, 10.0, 4.0, 4.0, 0.0], [10.0, 10.0, 4.0, 4.0, 10.0]])
    with pytest.raises(compat.MissingCompiledOpError) as info:
        nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5)
    message = str(info.value)
    assert "nms_rotated" in message
    assert "D2_SOURCE" in message and "rotated boxes" in message


@pytest.mark.skipif(compat.has_compiled_ops(), reason="detectron2 has its compiled ops here")
def test_collect_env_info_works_with_the_stand_in():
    # default_setup() calls it; it only catches ImportError around `import detectron2._C`.
    from detectron2.utils.collect_env import collect_env_info

    assert "no compiled ops" in collect_env_info()


def test_apply_twice_changes_nothing():
    import numpy as np
    from detectron2.data.common import MapDataset

    first = compat.apply()
    state = (sys.modules["detectron2._C"], MapDataset.__getitem__, np.__dict__.get("int"))
    assert compat.apply() == first
    assert state == (sys.modules["detectron2._C"], MapDataset.__getitem__, np.__dict__.get("int"))


def test_map_dataset_skips_a_sample_that_maps_to_none():
    from detectron2.data.common import MapDataset

    # Sample 1 stands for an unreadable image: the mapper returns None for it.
    dataset = MapDataset(list(range(5)), lambda x: None if x == 1 else x * 10)
    assert dataset[1] in {0, 20, 30, 40}
    assert [dataset[i] for i in (0, 2, 3, 4)] == [0, 20, 30, 40]


def test_map_dataset_says_so_when_every_sample_fails():
    from detectron2.data.common import MapDataset

    dataset = MapDataset(list(range(3)), lambda x: None)
    with pytest.raises(RuntimeError, match="Every sample"):
        dataset[0]


def _run_compat_against(package_root: Path) -> dict:
    """Load compat.py alone against the detectron2 in package_root, in a fresh process.

    Returns the fixes applied, and what the (patched) MapDataset then does with samples that
    map to None: the sample it gives instead of a failing one, and the error when all fail.
    """
    code = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.path.insert(0, {str(package_root)!r})
        spec = importlib.util.spec_from_file_location("compat_under_test", {str(COMPAT_FILE)!r})
        compat = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compat)
        applied = compat.apply()
        from detectron2.data.common import MapDataset
        try:
            skipped_to = MapDataset([0, 1, 2], lambda x: None if x == 0 else x * 10)[0]
        except Exception as e:
            skipped_to = type(e).__name__
        try:
            MapDataset([0, 1], lambda x: None)[0]
            all_failed = None
        except Exception as e:
            all_failed = type(e).__name__ + ": " + str(e)
        print(json.dumps(dict(applied=applied, skipped_to=skipped_to, all_failed=all_failed)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


# A MapDataset.__getitem__ as detectron2's, with the retry line and what happens when the
# candidates run out as parameters. Every fake calls itself 0.6, as git main does.
_MAP_DATASET = """
import random
import numpy as np
{extra_import}

class MapDataset:
    def __init__(self, dataset, map_func):
        self._dataset = dataset
        self._map_func = map_func
        self._rng = random.Random(42)
        self._fallback_candidates = set(range(len(dataset)))

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, idx):
        cur_idx = int(idx)
        while True:
            data = self._map_func(self._dataset[cur_idx])
            if data is not None:
                self._fallback_candidates.add(cur_idx)
                return data
            {discard}
            {when_empty}
            cur_idx = self._rng.sample({population}, k=1)[0]
"""


def _fake_detectron2(root: Path, population, discard=True, when_empty="", extra_import="") -> Path:
    d2 = root / "detectron2"
    _write(d2 / "__init__.py", "__version__ = '0.6'\n")
    _write(d2 / "_C.py", "def get_compiler_version():\n    return 'GCC 12'\n")
    _write(d2 / "data" / "__init__.py", "")
    _write(
        d2 / "data" / "common.py",
        _MAP_DATASET.format(
            population=population,
            discard="self._fallback_candidates.discard(cur_idx)" if discard else "pass",
            when_empty=when_empty or "pass",
            extra_import=extra_import,
        ),
    )
    return root


CLEAR = "Every sample of the dataset failed to load"


def test_leaves_a_complete_detectron2_alone(tmp_path):
    # Compiled ops present, no removed NumPy or Pillow names used, a MapDataset that samples
    # from a list and says so when every sample fails.
    root = _fake_detectron2(
        tmp_path, "list(self._fallback_candidates)",
        when_empty="if not self._fallback_candidates: raise RuntimeError('all samples failed')",
    )
    result = _run_compat_against(root)
    assert result["applied"] == []
    assert result["skipped_to"] in (10, 20)
    assert result["all_failed"] == "RuntimeError: all samples failed"


def test_a_map_dataset_like_git_mains_gets_the_clear_message(tmp_path):
    # git main samples from a list, and ends with random.sample's ValueError when all fail.
    result = _run_compat_against(_fake_detectron2(tmp_path, "list(self._fallback_candidates)"))
    assert result["applied"] == ["map_dataset_all_failed"]
    assert result["skipped_to"] in (10, 20)
    assert result["all_failed"].startswith("RuntimeError: " + CLEAR)


def test_a_map_dataset_like_0_6_gets_both_fixes_on_python_3_11(tmp_path):
    # detectron2 0.6 samples from the set itself: a TypeError since Python 3.11.
    result = _run_compat_against(
        _fake_detectron2(tmp_path, "self._fallback_candidates", extra_import="x = np.float")
    )
    retry = ["map_dataset_retry"] if sys.version_info >= (3, 11) else []
    assert result["applied"] == ["numpy_aliases"] + retry + ["map_dataset_all_failed"]
    assert result["skipped_to"] in (10, 20)
    assert result["all_failed"].startswith("RuntimeError: " + CLEAR)


def test_a_map_dataset_that_would_retry_forever_is_found_out(tmp_path):
    # Never discarding a failing sample loops forever when all fail; the probe stops it.
    root = _fake_detectron2(tmp_path, "sorted(self._fallback_candidates)", discard=False)
    result = _run_compat_against(root)
    assert result["applied"] == ["map_dataset_all_failed"]
    assert result["all_failed"].startswith("RuntimeError: " + CLEAR)


def _pristine_names() -> tuple:
    """numpy's and PIL.Image's names in a fresh process, before any fix adds aliases."""
    code = "import json, numpy, PIL.Image as I; print(json.dumps([sorted(numpy.__dict__), dir(I)]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    numpy_names, image_names = json.loads(out.stdout)
    return set(numpy_names), set(image_names)


def test_installed_detectron2_gets_exactly_the_fixes_it_needs():
    # Decided from what the installed detectron2 uses and does: its version string says 0.6
    # for the PyPI release and for git main alike.
    from detectron2.data.common import MapDataset

    applied = compat.apply()
    source = compat._detectron2_sources()
    numpy_names, image_names = _pristine_names()
    removed_numpy = set(re.findall(r"\bnp\.(int|float|bool|str|object)\b", source)) - numpy_names
    removed_pillow = set(re.findall(r"\bImage\.(LINEAR|CUBIC|ANTIALIAS)\b", source)) - image_names
    assert ("numpy_aliases" in applied) == bool(removed_numpy)
    assert ("pillow_aliases" in applied) == bool(removed_pillow)
    assert ("compiled_ops_stand_in" in applied) == (not compat.has_compiled_ops())
    # Neither detectron2 0.6 nor git main says "every sample failed" by itself.
    assert "map_dataset_all_failed" in applied
    # Whatever was fixed, the MapDataset now skips a failing sample and says when all fail.
    skips, says_all_failed, _ = compat._probe_map_dataset(MapDataset)
    assert skips and says_all_failed
