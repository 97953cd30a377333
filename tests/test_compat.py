"""fpn_plugin.compat: detectron2 0.6 on today's Python, NumPy and Pillow, without compiled ops."""
import importlib.util
import json
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


def _run_compat_against(package_root: Path) -> list:
    """Load compat.py alone against the detectron2 in package_root, in a fresh process."""
    code = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.path.insert(0, {str(package_root)!r})
        spec = importlib.util.spec_from_file_location("compat_under_test", {str(COMPAT_FILE)!r})
        compat = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compat)
        print(json.dumps(compat.apply()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_leaves_a_complete_detectron2_alone(tmp_path):
    # A detectron2 like a source build of git main: compiled ops present, no removed NumPy or
    # Pillow names used, a MapDataset that samples from a list.
    d2 = tmp_path / "detectron2"
    _write(d2 / "__init__.py", "__version__ = '0.7'\n")
    _write(d2 / "_C.py", "def get_compiler_version():\n    return 'GCC 12'\n")
    _write(d2 / "data" / "__init__.py", "")
    _write(
        d2 / "data" / "common.py",
        """
        import random
        import numpy as np

        class MapDataset:
            def __getitem__(self, idx):
                return random.Random(0).sample(list(range(3)), k=1)[0], np.int64(idx)
        """,
    )
    assert _run_compat_against(tmp_path) == []


def test_installed_detectron2_gets_exactly_the_fixes_it_needs():
    import detectron2

    version = detectron2.__version__
    applied = compat.apply()
    if version.startswith("0.6"):
        assert {"numpy_aliases", "pillow_aliases"} <= set(applied)
    assert ("compiled_ops_stand_in" in applied) == (not compat.has_compiled_ops())
