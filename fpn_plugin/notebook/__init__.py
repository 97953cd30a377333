"""What the Colab notebook (``colab/fpn_plugin.ipynb``) calls besides the command-line tools.

The notebook holds no model, training or evaluation logic: it writes one config with
:func:`write_config`, runs ``train_net.py``, ``predict.py`` and the package's CLIs with
:func:`run`, takes the images to predict from :func:`eval_images`, and shows what the tools
wrote with :func:`show_images` and :func:`print_ap_table`.
"""
from ..config import load_config  # noqa: F401  (to read a written config back: nb.load_config(path))
from .commands import CommandFailed, run
from .eval_data import eval_coco_json, eval_images
from .results import print_ap_table, show_images
from .run_config import DATASETS, write_config

__all__ = [
    "run", "CommandFailed", "write_config", "DATASETS", "eval_images", "eval_coco_json",
    "print_ap_table", "show_images",
]
