"""The Colab notebook: stored clean, and executed end to end on the CPU with small parameters."""
import json
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "colab" / "fpn_plugin.ipynb"


def _read():
    return nbformat.read(str(NOTEBOOK), as_version=4)


def _tagged(nb, tag):
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def test_notebook_is_stored_without_outputs():
    nb = _read()
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (
        f"cells {dirty} of {NOTEBOOK.name} are stored with outputs; clear them with "
        f"Edit > Clear all outputs in Jupyter (or `jupyter nbconvert --clear-output --inplace "
        f"colab/{NOTEBOOK.name}`) before committing"
    )


def test_notebook_has_a_parameters_cell_of_plain_assignments():
    # papermill injects its values after the cell tagged "parameters"; every line must be a
    # NAME = value assignment (or a comment) for that to work.
    cell = _tagged(_read(), "parameters")
    names = []
    for line in cell.source.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^([A-Z_][A-Z0-9_]*) = ", line)
        assert match, f"not a plain assignment in the parameters cell: {line!r}"
        names.append(match.group(1))
    for expected in ("CONFIG", "DATASET", "DATA_DIR", "ITERATIONS", "IMS_PER_DEVICE",
                     "ACCUMULATION_STEPS", "IMAGE_SIZE", "PRECISION", "OUTPUT_DIR"):
        assert expected in names


def test_notebook_holds_no_model_or_training_logic():
    # Every step goes through the package or its CLIs (fpn_plugin.notebook.run).
    source = "\n".join(c.source for c in _read().cells if c.cell_type == "code")
    for forbidden in ("import torch", "build_model", "DefaultTrainer", "Trainer(", "COCOEvaluator",
                      "from detectron2"):
        assert forbidden not in source, forbidden


def _inject(nb, values: dict):
    """papermill's way: a cell after the "parameters" cell that assigns the new values."""
    cell = _tagged(nb, "parameters")
    index = nb.cells.index(cell)
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    injected = nbformat.v4.new_code_cell(source)
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _images(cell) -> int:
    return sum(1 for o in cell.outputs if o.output_type == "display_data"
               and any(k.startswith("image/") for k in o.get("data", {})))


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_cpu(tmp_path):
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (pip install -e '.[dev]')")
    nb = _read()
    out = tmp_path / "run"
    _inject(nb, {
        "OUTPUT_DIR": str(out),
        "ITERATIONS": 40,
        "PRECISION": "fp32",
        "NUM_GT_IMAGES": 3,
        "NUM_PROPOSALS": 10,
        "USE_FIFTYONE": True,
        "FIFTYONE_APP": False,  # the app needs a browser; the dataset and its evaluation do not
        "EXTRA_OPTS": {
            "DATASETS.SHAPES.CACHE_DIR": str(tmp_path / "shapes"),
            "DATASETS.SHAPES.NUM_TRAIN": 32,
            "DATASETS.SHAPES.NUM_VAL": 8,
            "DATALOADER.NUM_WORKERS": 0,
            "SOLVER.BASE_LR": 0.01,  # 40 iterations from scratch: a gentler LR than the config's
        },
    })
    env = {
        # FiftyOne's database for this test only.
        "FIFTYONE_DATABASE_DIR": str(tmp_path / "fodb"),
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=1200, kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        )
        # Run every cell, then every cell again in the same kernel: a re-run must not fail
        # (training resumes from the finished run's last checkpoint).
        with client.setup_kernel():
            for rerun in (False, True):
                for index, cell in enumerate(nb.cells):
                    if rerun:
                        cell.outputs = []
                    client.execute_cell(cell, index)
                if not rerun:
                    first_pass = json.loads(nbformat.writes(nb))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    nbformat.write(nb, str(tmp_path / "executed.ipynb"))  # for a look when an assertion fails
    for run_cells in (first_pass["cells"], nb.cells):
        errors = [o for c in run_cells if c["cell_type"] == "code" for o in c["outputs"]
                  if o["output_type"] == "error"]
        assert not errors, errors

    # The install cell found everything installed and printed the environment.
    assert "fpn_plugin" in _text(_tagged(nb, "install"))
    # Ground truth drawn and shown.
    assert len(list((out / "ground_truth").glob("*.jpg"))) == 3
    assert _images(_tagged(nb, "ground-truth")) == 3
    # Trained 40 iterations; the second pass resumed instead of starting over.
    assert (out / "model_final.pth").is_file()
    records = [json.loads(line) for line in open(out / "metrics.json")]
    trained = [r["iteration"] for r in records if "total_loss" in r]
    assert trained == [19, 39], trained  # logged every 20 iterations, and not trained again
    train_text = _text(_tagged(nb, "train"))
    assert "resum" in train_text.lower(), train_text[-2000:]
    # Loss curves written by the trainer and shown inline.
    assert (out / "plots" / "losses.png").is_file()
    assert _images(_tagged(nb, "plots")) >= 2
    # The AP table printed numbers.
    table = _text(_tagged(nb, "ap-table"))
    assert re.search(r"\| *AP50 *\| *\d+\.\d\d *\|", table), table  # cells, any padding
    assert re.search(r"\| *AP *\| *\d+\.\d\d *\|", table), table
    # Predictions drawn for the 4 test images, with predictions.json and the proposals.
    assert len(list((out / "predict" / "vis").iterdir())) == 4
    assert _images(_tagged(nb, "predict")) == 4
    predictions = json.load(open(out / "predict" / "predictions.json"))
    assert isinstance(predictions, list)
    assert all({"image_id", "category_id", "bbox", "score"} <= set(p) for p in predictions)
    assert len(list((out / "predict" / "proposals").iterdir())) == 4
    # Proposal recall printed, and FiftyOne got the predictions with the ground truth.
    assert re.search(r"AR@100\s+\d+\.\d\d", _text(_tagged(nb, "proposal-recall")))
    predict_text = _text(_tagged(nb, "predict"))
    assert "FiftyOne dataset: fpn_plugin_notebook (4 samples)" in predict_text
    assert re.search(r"Num samples:\s+4\b", _text(_tagged(nb, "fiftyone")))
