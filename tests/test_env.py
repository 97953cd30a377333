"""`python -m fpn_plugin.env` reports the environment, detectron2's origin included."""
import re
import subprocess
import sys

from fpn_plugin import env


def test_env_command_exits_0_and_reports_detectron2_origin():
    out = subprocess.run(
        [sys.executable, "-m", "fpn_plugin.env"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    # One row a line: the name, two or more spaces, the value.
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.stdout.splitlines())
    assert rows["detectron2 origin"] == env.detectron2_origin()
    for name in ("python", "torch", "torchvision", "detectron2", "numpy", "Pillow", "pycocotools",
                 "fiftyone", "detectron2 compiled ops", "MODEL.DEVICE auto", "CPU"):
        assert name in rows, f"{name} missing from:\n{out.stdout}"
    assert rows["MODEL.DEVICE auto"] in ("cpu", "cuda")


def test_origin_names_the_distribution():
    origin = env.detectron2_origin()
    assert any(word in origin for word in ("pb1-detectron2", "source build", "not installed by pip", "wheel"))


def test_env_reports_the_int8_activation_bits_of_each_cpu_kind(monkeypatch):
    for vnni, expected in ((True, "8 bits (VNNI;"), (False, "7 bits (no VNNI: 8 bits would saturate;")):
        monkeypatch.setattr(env.precision, "cpu_has_vnni", lambda: vnni)
        assert dict(env.collect())["int8 activations"].startswith(expected)
