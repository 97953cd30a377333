"""The package as a user installs it: a wheel (``pip install .``), not this checkout.

The wheel is built from a copy of the package alone (pyproject.toml, README.md, fpn_plugin/) and
installed into a folder of its own; the checks run in a process whose working directory is not
the repository, with that folder first on the path and FiftyOne and matplotlib made unimportable,
as in a core install without the extras (torch and detectron2 come from this venv: there is no
network for a fresh one).
"""
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Run first in the installed copy: these modules cannot be imported, as in a core install.
_BLOCK = textwrap.dedent("""
    import sys
    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, _NotInstalled())
""")
# The extras fpn_plugin's core does without. detectron2 itself requires matplotlib (its
# Visualizer draws with it), so only code that does not draw can run without it.
NO_EXTRAS = ("fiftyone", "matplotlib")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, wheel path): the package built as a wheel and installed with pip."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "fpn_plugin", src / "fpn_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"), str(src)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = (root / "dist").glob("fpn_plugin-*.whl")
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    return site, wheel


def _run_installed(site: Path, code: str, *args: str, blocked=NO_EXTRAS, timeout: int = 600):
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(site)}
    program = _BLOCK.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", program, *args],
                          cwd=site.parent, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_ships_every_config_and_needs_no_extra(installed):
    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(Path(n).name for n in names if n.startswith("fpn_plugin/configs/"))
    assert shipped == sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [line for line in requires if "extra ==" not in line]
    assert not [r for r in core if "fiftyone" in r or "matplotlib" in r], core
    assert any("fiftyone" in r and 'extra == "fiftyone"' in r for r in requires), requires
    assert any("matplotlib" in r and 'extra == "plots"' in r for r in requires), requires


def test_installed_package_builds_every_config_without_the_extras(installed):
    site, _ = installed
    run = _run_installed(site, """
        import torch
        torch.set_num_threads(1)
        import fpn_plugin
        from fpn_plugin import model_zoo
        assert fpn_plugin.__file__.startswith(sys.argv[1]), fpn_plugin.__file__
        built = []
        for name in model_zoo.list_configs():
            if name.startswith("Base-"):
                continue
            model = model_zoo.get(name)
            assert not model.training
            built.append(f"{name}:{type(model.backbone).__name__}")
        print("BUILT", " ".join(built))
        assert model_zoo.get_config_file("configs/fpn_r50.yaml").startswith(sys.argv[1])
    """, str(site))
    assert run.returncode == 0, run.stderr[-3000:]
    built = dict(item.split(":") for item in run.stdout.split("BUILT ", 1)[1].split())
    expected = {p.name for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("Base-")}
    assert set(built) == expected
    assert built["fpn_r50.yaml"] == "FPN" and built["r50_c4_voc07.yaml"] != "FPN"


def test_installed_demo_help_and_missing_extras_name_their_extra(installed):
    site, _ = installed
    demo = _run_installed(site, "import runpy; sys.argv = ['demo', '--help']; "
                                "runpy.run_module('fpn_plugin.demo', run_name='__main__')",
                          blocked=("fiftyone",))  # the demo draws with detectron2's Visualizer
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "--config-file" in demo.stdout and "--num-vis" in demo.stdout
    run = _run_installed(site, """
        from fpn_plugin.optional import OptionalDependencyError
        from fpn_plugin.engine.plots import plot_curves
        from fpn_plugin.inference import fiftyone_view
        from fpn_plugin.notebook import show_images
        for call in (lambda: plot_curves({"total_loss": [(0, 1.0)]}, "plots"),
                     lambda: fiftyone_view.images_to_fiftyone([], {}, "x"),
                     lambda: show_images([])):
            try:
                call()
            except OptionalDependencyError as e:
                print("MISSING", e)
    """, blocked=NO_EXTRAS + ("IPython",))
    assert run.returncode == 0, run.stderr[-3000:]
    missing = [line for line in run.stdout.splitlines() if line.startswith("MISSING")]
    assert len(missing) == 3, run.stdout
    assert "needs matplotlib" in missing[0] and "pip install 'fpn-plugin[plots]'" in missing[0]
    assert "needs fiftyone" in missing[1] and "pip install 'fpn-plugin[fiftyone]'" in missing[1]
    assert "needs IPython" in missing[2] and "pip install 'fpn-plugin[notebook]'" in missing[2]
