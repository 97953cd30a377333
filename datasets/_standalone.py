"""Load a module of ``fpn_plugin.data`` from its file, without ``import fpn_plugin``.

The scripts in this folder need neither torch nor detectron2 (which ``import fpn_plugin``
brings in), so they run on a machine that only stores the data, or before ``make install``.
"""
import importlib.util
from pathlib import Path


def load_data_module(name: str):
    """Return ``fpn_plugin/data/<name>.py`` as a module of its own."""
    path = Path(__file__).resolve().parents[1] / "fpn_plugin" / "data" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fpn_plugin_data_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
