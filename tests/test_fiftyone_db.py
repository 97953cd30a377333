"""FiftyOne's MongoDB, installed by `make install`, starts offline and stores a dataset."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import fiftyone as fo

    ds = fo.Dataset("fpn_plugin_db_check")
    box = fo.Detection(label="cat", bounding_box=[0.1, 0.1, 0.2, 0.2])
    ds.add_sample(fo.Sample(filepath="/nonexistent/a.jpg", gt=fo.Detections(detections=[box])))
    print("COUNT", len(ds), ds.count("gt.detections"), ds.distinct("gt.detections.label"))
    ds.delete()
    """
)


def test_fiftyone_database_starts_and_stores_a_dataset(tmp_path):
    env = dict(
        os.environ,
        FIFTYONE_DATABASE_DIR=str(tmp_path / "db"),
        FIFTYONE_DO_NOT_TRACK="true",
        FIFTYONE_DATABASE_VALIDATION="false",
    )
    # A fresh process, so that its mongod stops with it.
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # (FiftyOne reuses a database service already running on the machine, so the folder
    # above is used only when this process starts the service.)
    assert "COUNT 1 1 ['cat']" in out.stdout
