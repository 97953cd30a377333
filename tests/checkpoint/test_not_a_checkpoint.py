"""Files that are no checkpoint at all, given as weights: an error naming the file and what it is."""
import pickle
import zipfile

import pytest
import torch

from _weight_files import plugin_cfg
from detectron2.modeling import build_model

from fpn_plugin.checkpoint import PluginCheckpointer
from fpn_plugin.checkpoint.not_a_checkpoint import NotACheckpointError


def _write(path, kind):
    if kind == "text":
        path.write_text("hello, these are not weights\n")
    elif kind == "html":
        path.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("weights/readme.txt", "x")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "list" and path.suffix == ".pth":
        torch.save([1, 2, 3], path)
    elif kind == "list":
        with open(path, "wb") as f:
            pickle.dump([1, 2, 3], f, protocol=2)


@pytest.mark.parametrize("kind, expected", [
    ("text", r"is not a weights file: it is a text file, starting 'hello, these are not weights'"),
    ("html", r"is not a weights file: it is an HTML page \(a download link that needed a login"),
    ("zip", r"is not a weights file: it is a zip archive of \['weights/readme.txt'\], not a torch checkpoint"),
    ("empty", r"is not a weights file: it is empty \(0 bytes\)"),
    ("truncated", r"could not be read as a weights file \(.*\): it is damaged, cut short, or not a checkpoint"),
    ("list", r"holds a list, not a dict of weights: not a checkpoint"),
])
@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_non_checkpoints_are_named_and_explained(tmp_path, kind, expected, suffix):
    if kind == "truncated" and suffix == ".pkl":
        pytest.skip("torch.save writes .pth files")
    path = tmp_path / f"downloaded{suffix}"
    _write(path, kind)
    model = build_model(plugin_cfg("fpn_r18.yaml"))
    with pytest.raises(ValueError, match=expected) as info:
        PluginCheckpointer(model).load(str(path))
    assert str(path) in str(info.value)
    if kind != "list":
        assert isinstance(info.value, NotACheckpointError)


def test_a_protocol_0_pickle_of_weights_is_not_taken_for_text(tmp_path):
    import numpy as np

    path = tmp_path / "old.pkl"
    with open(path, "wb") as f:
        pickle.dump({"conv1_w": np.zeros((2, 2), np.float32)}, f, protocol=0)
    from fpn_plugin.checkpoint.not_a_checkpoint import why_not_a_checkpoint

    assert path.read_bytes()[:1] == b"("  # text, but a pickle
    assert why_not_a_checkpoint(str(path)) == ""
