import os

# Same thread count on every machine (and in the processes the tests start): reductions are
# split by thread, so results and timings then do not depend on the host's core count.
TEST_THREADS = 2
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(TEST_THREADS)

import pytest  # noqa: E402
import torch  # noqa: E402

# fpn_plugin must be imported before any detectron2 submodule (see fpn_plugin/compat.py);
# importing it here makes that true for every test module, whatever it imports first.
import fpn_plugin  # noqa: F401, E402
from _disk import free_disk_gb, require_free_disk  # noqa: E402

torch.set_num_threads(TEST_THREADS)


def pytest_sessionstart(session):
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        require_free_disk(factory.getbasetemp().parent)


def pytest_report_header(config):
    """What ``python -m fpn_plugin.env`` reports, so a red run shows which machine it ran on."""
    from fpn_plugin.env import collect

    wanted = ("torch", "detectron2", "detectron2 origin", "detectron2 compiled ops", "CUDA GPUs",
              "CPU", "torch CPU capability", "bf16 on CPU", "precision auto")
    rows = dict(collect())
    lines = [f"fpn_plugin env: {name}: {rows[name]}" for name in wanted if name in rows]
    return lines + [f"fpn_plugin env: test threads: {TEST_THREADS}",
                    f"fpn_plugin env: free disk for tmp_path: {free_disk_gb(_tmp_root(config)):.1f} GB"]


def _tmp_root(config):
    factory = getattr(config, "_tmp_path_factory", None)
    return factory.getbasetemp().parent if factory is not None else os.getcwd()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none on this host)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
