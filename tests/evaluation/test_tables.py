"""The result tables: Markdown for the log and .md files, CSV at full precision, results.json."""
import json
import math
import re

from fpn_plugin.evaluation.tables import markdown_table, write_results, write_table

HEADER = ["class", "AP", "GT"]
ROWS = [["circle", 99.0, 3], ["square", float("nan"), 10], ["mean", 1.005, None]]


def test_markdown_table_aligns_cells_and_right_aligns_numbers():
    lines = markdown_table(HEADER, ROWS).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    # Markdown's alignment row: text on the left, numbers on the right.
    assert [re.sub("-+", "-", c) for c in cells.pop(1)] == [":-", "-:", "-:"]
    assert cells == [
        ["class", "AP", "GT"],
        ["circle", "99.00", "3"],
        ["square", "-", "10"],  # NaN and None are "-", never "nan" or 0
        ["mean", "1.00", "-"],
    ]
    assert len({len(line) for line in lines}) == 1  # padded to the same width: readable in a log
    assert lines[2].endswith("99.00 |    3 |")  # numbers on the right
    assert "99.000" in markdown_table(HEADER, ROWS, digits=3)


def test_write_table_and_results(tmp_path):
    md, csv = write_table(str(tmp_path), "per_class", HEADER, ROWS, title="Per class")
    assert open(md).read().startswith("# Per class\n\n| class")
    assert open(csv).read().splitlines() == ["class,AP,GT", "circle,99.0,3", "square,,10", "mean,1.005,"]
    assert write_table("", "per_class", HEADER, ROWS) == []
    path = write_results(str(tmp_path), {"bbox": {"AP": 50.0, "APs": math.nan, "AP50": 7}})
    assert json.loads(open(path).read()) == {"bbox": {"AP": 50.0, "APs": None, "AP50": 7.0}}
