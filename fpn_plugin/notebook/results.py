"""What the notebook shows of a run: the AP table of its evaluation, and image files inline."""
import glob
import json
import os
from typing import Iterable, List

from ..config import load_config
from ..optional import require

__all__ = ["print_ap_table", "show_images"]

# Summary metrics of each evaluator, in the order printed; per-class keys contain "-".
_SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP50_07", "AP50_area")


def print_ap_table(config_file: str) -> List[list]:
    """Print the box AP of the last evaluation of each test dataset, beside the published one.

    Reads ``<OUTPUT_DIR>/inference/<dataset>/results.json`` (written by the evaluators). With
    ``TEST.REFERENCE`` set, the table has the reference and the difference; otherwise ours only.

    Returns:
        The rows printed (for the last dataset).
    """
    from ..evaluation.compare import HEADER, comparison_rows
    from ..evaluation.references import get_reference
    from ..evaluation.tables import RESULTS_FILE, markdown_table

    cfg = load_config(config_file)
    rows: List[list] = []
    for name in cfg.DATASETS.TEST:
        path = os.path.join(cfg.OUTPUT_DIR, "inference", name, RESULTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: evaluate first (train_net.py --eval-only).")
        with open(path) as f:
            ours = {k: (float("nan") if v is None else v) for k, v in json.load(f)["bbox"].items()}
        if cfg.TEST.REFERENCE:
            ref = get_reference(cfg.TEST.REFERENCE)
            rows = comparison_rows(ours, ref)
            print(f"Box AP on {name} vs {ref.title} ({ref.source}; {ref.metric})")
            if ref.dataset != name:
                print(f"Note: the reference was measured on {ref.dataset}, not {name}: "
                      "not a like-for-like comparison.")
            print(markdown_table(HEADER, rows))
        else:
            rows = [[k, ours[k]] for k in _SUMMARY if k in ours]
            print(f"Box AP on {name} (no published result for this config: TEST.REFERENCE is empty)")
            print(markdown_table(["metric", "ours"], rows))
        print()
    return rows


def show_images(paths: Iterable[str], width: int = 480, limit: int = 12) -> List[str]:
    """Display image files inline (sorted; at most ``limit``); return the paths shown."""
    require("IPython", "show_images (the notebook's inline images)")
    from IPython.display import Image, display

    if isinstance(paths, str):
        paths = sorted(glob.glob(paths))
    shown = sorted(paths)[:limit]
    if not shown:
        print("(no images to show)")
    for path in shown:
        print(os.path.basename(path))
        display(Image(filename=path, width=width))
    return shown
