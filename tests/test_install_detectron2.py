"""tools/install_detectron2.py: the two lines patched in pb1-detectron2's setup.py."""
import importlib.util
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
