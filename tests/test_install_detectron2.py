"""tools/install_detectron2.py: the two lines patched in pb1-detectron2's setup.py, and source archives."""
import importlib.util
import tarfile
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "install_detectron2.py"
spec = importlib.util.spec_from_file_location("install_detectron2", TOOL)
install_detectron2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_detectron2)

# The lines of pb1-detectron2 0.6's setup.py that the installer patches, as they stand there.
SDIST_SETUP_PY = '''
def get_model_zoo_configs() -> List[str]:
    config_paths = glob.glob("configs/**/*.yaml", recursive=True) + glob.glob(
        "configs/**/*.py", recursive=True
    )
    return config_paths

setup(
    package_data={"detectron2.model_zoo": get_model_zoo_configs()},
    ext_modules=get_extensions(),
)
'''


def test_patch_drops_the_extension_and_finds_the_configs_where_the_sdist_has_them(
    tmp_path, monkeypatch
):
    setup_py = tmp_path / "setup.py"
    setup_py.write_text(SDIST_SETUP_PY)
    install_detectron2.patch_setup_py(str(setup_py))
    patched = setup_py.read_text()
    assert "ext_modules=[]," in patched and "get_extensions()" not in patched

    # Run the patched glob as setup.py would, from the sdist's top folder.
    configs = tmp_path / "detectron2" / "model_zoo" / "configs" / "COCO-Detection"
    configs.mkdir(parents=True)
    (configs / "faster_rcnn_R_50_FPN_1x.yaml").write_text("MODEL: {}\n")
    (configs / "lazy.py").write_text("model = None\n")
    monkeypatch.chdir(tmp_path)
    expression = next(line for line in patched.splitlines() if "root_dir" in line)
    found = eval(expression.split("=", 1)[1], {"glob": __import__("glob")})
    assert sorted(found) == [
        "configs/COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
        "configs/COCO-Detection/lazy.py",
    ]


def test_patch_refuses_a_setup_py_it_does_not_know(tmp_path):
    setup_py = tmp_path / "setup.py"
    setup_py.write_text("setup(ext_modules=build_all())\n")
    with pytest.raises(SystemExit, match="sdist changed; install detectron2 from source"):
        install_detectron2.patch_setup_py(str(setup_py))


def _source_archive(tmp_path, top="detectron2"):
    tree = tmp_path / "tree" / top
    tree.mkdir(parents=True)
    (tree / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (tree / "detectron2").mkdir()
    (tree / "detectron2" / "__init__.py").write_text('__version__ = "0.6"\n')
    archive = tmp_path / "detectron2-0123abcd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=top)
    return archive


def test_a_source_archive_is_unpacked_into_the_venv_and_built_from_there(tmp_path, monkeypatch):
    # D2_SOURCE=../shared/detectron2-main/detectron2-<commit>.tar.gz, as `make test-d2main` does.
    archive = _source_archive(tmp_path)
    prefix = tmp_path / "venv"
    monkeypatch.setattr(install_detectron2.sys, "prefix", str(prefix))
    monkeypatch.setattr(install_detectron2.sys, "base_prefix", str(tmp_path / "python"))
    calls = []
    monkeypatch.setattr(install_detectron2, "pip", lambda *args: calls.append(args))
    install_detectron2.install_from_source(str(archive))
    tree = prefix / "src" / "detectron2-0123abcd" / "detectron2"
    assert calls == [("install", "--no-build-isolation", str(tree))]
    assert (tree / "setup.py").is_file() and (tree / "detectron2" / "__init__.py").is_file()
    # A second install starts from a fresh copy.
    (tree / "stale.o").write_text("")
    install_detectron2.install_from_source(str(archive))
    assert not (tree / "stale.o").exists() and len(calls) == 2


def test_an_archive_without_one_source_tree_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in "ab":
        (tmp_path / name / "setup.py").write_text("")
    with pytest.raises(SystemExit, match="one source tree with a setup.py"):
        install_detectron2.source_tree_in(str(tmp_path))
