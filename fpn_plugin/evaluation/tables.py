"""Write result tables as Markdown and CSV, and format them for the log."""
import csv
import json
import math
import numbers
import os
from typing import List, Optional, Sequence

from tabulate import tabulate

__all__ = ["markdown_table", "write_table", "write_results", "RESULTS_FILE"]

# What an evaluator returned, saved beside its tables: scripts and notebooks read the numbers
# from here instead of parsing the log.
RESULTS_FILE = "results.json"


def format_cell(value, digits: int = 2) -> str:
    """Numbers with ``digits`` decimals, NaN and None as "-", anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], digits: int = 2) -> str:
    """A GitHub Markdown (pipe) table, aligned; columns of numbers are right-aligned."""
    numeric = [
        all(isinstance(row[i], numbers.Real) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(header))
    ]
    # Cells formatted here (NaN as "-", fixed decimals): tabulate's own number parsing would not.
    cells = [[format_cell(v, digits) for v in row] for row in rows]
    return tabulate(cells, headers=list(header), tablefmt="pipe", disable_numparse=True,
                    colalign=["right" if n else "left" for n in numeric])


def write_table(
    output_folder: Optional[str],
    stem: str,
    header: Sequence[str],
    rows: Sequence[Sequence],
    title: str = "",
    digits: int = 2,
) -> List[str]:
    """Save a table as ``<stem>.md`` and ``<stem>.csv`` in ``output_folder``.

    Returns:
        The paths written (none when ``output_folder`` is None or empty).
    """
    if not output_folder:
        return []
    os.makedirs(output_folder, exist_ok=True)
    md_path = os.path.join(output_folder, stem + ".md")
    csv_path = os.path.join(output_folder, stem + ".csv")
    with open(md_path, "w") as f:
        if title:
            f.write(f"# {title}\n\n")
        f.write(markdown_table(header, rows, digits) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            # Full precision in the CSV; empty cells for missing values.
            writer.writerow(
                ["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in row]
            )
    return [md_path, csv_path]


def write_results(output_folder: Optional[str], results: dict) -> Optional[str]:
    """Save an evaluator's results (``{"bbox": {"AP": ...}}``) as ``results.json``.

    NaN (a metric with no data, e.g. APs without small objects) is written as null, so the
    file is strict JSON. Returns the path, or None when ``output_folder`` is empty.
    """
    if not output_folder or not results:
        return None

    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return float(value) if isinstance(value, (int, float)) else value

    os.makedirs(output_folder, exist_ok=True)
    path = os.path.join(output_folder, RESULTS_FILE)
    with open(path, "w") as f:
        json.dump(clean(results), f, indent=1)
    return path
