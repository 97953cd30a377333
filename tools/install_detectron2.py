#!/usr/bin/env python
"""Install detectron2 into the running Python, by the project's order of preference.

1. A detectron2 that is already importable is kept (e.g. a source build with CUDA ops).
2. If ``D2_SOURCE`` (or ``--source``) names a git URL, a local checkout or a local source
   archive (``.tar.gz``), it is built from source (needs a C++ compiler, and nvcc for the
   CUDA ops). It also replaces the Python-only copy of route 3, which is the least preferred.
3. Otherwise the Python package of ``pb1-detectron2==0.6`` from PyPI (the official
   detectron2 v0.6 Python source) is installed without its C++ extension. Its sdist cannot be
   installed by pip as it is: it lacks ``detectron2/layers/csrc`` (so the extension build
   fails) and its setup.py globs the model-zoo configs from a top-level ``configs/`` that the
   sdist does not have (so they are silently dropped). This script patches exactly those two
   lines in an unpacked copy and lets pip install it, so ``pip show``/``pip uninstall
   pb1-detectron2`` work. ``fpn_plugin.compat`` makes up for the missing compiled ops.

Only the standard library is used: this runs before anything else is installed but torch.
"""
import argparse
import glob
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

PYPI_DISTRIBUTION = "pb1-detectron2"
PYPI_VERSION = "0.6"

# (what the sdist's setup.py says, what the patched copy says, why)
SETUP_PATCHES = [
    (
        "ext_modules=get_extensions(),",
        "ext_modules=[],",
        "the sdist has no detectron2/layers/csrc to compile",
    ),
    (
        'glob.glob("configs/**/*.yaml", recursive=True) + glob.glob(\n'
        '        "configs/**/*.py", recursive=True\n'
        "    )",
        'glob.glob("configs/**/*.y*ml", recursive=True, root_dir="detectron2/model_zoo") + '
        'glob.glob("configs/**/*.py", recursive=True, root_dir="detectron2/model_zoo")',
        "the configs sit in detectron2/model_zoo/configs in the sdist, not in configs/",
    ),
]


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    log(" ".join(cmd))
    subprocess.check_call(cmd)


def installed_distribution() -> str | None:
    """Name of the distribution that provides the importable ``detectron2``, or None."""
    if importlib.util.find_spec("detectron2") is None:
        return None
    names = importlib.metadata.packages_distributions().get("detectron2", [])
    return names[0] if names else "unknown (not installed by pip, e.g. on PYTHONPATH)"


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _extract(archive: str, dest: str) -> None:
    with tarfile.open(archive) as tar:
        # The "data" filter refuses absolute paths and links out of dest (Python >= 3.10.12).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **safe)


def source_tree_in(folder: str) -> str:
    """The one folder with a setup.py that an unpacked source archive holds (or folder itself)."""
    if os.path.isfile(os.path.join(folder, "setup.py")):
        return folder
    trees = sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if os.path.isfile(os.path.join(folder, name, "setup.py"))
    )
    if len(trees) != 1:
        sys.exit(
            f"[install_detectron2] expected one source tree with a setup.py in the archive, "
            f"found {len(trees)}: {trees}"
        )
    return trees[0]


def install_from_source(source: str) -> None:
    """Build detectron2 from a git URL, a local checkout or a local source archive (.tar.gz)."""
    if os.path.isfile(source) and source.endswith(ARCHIVE_SUFFIXES):
        if sys.prefix == sys.base_prefix:  # not a virtual environment: a temporary folder
            with tempfile.TemporaryDirectory(prefix="d2-source-") as tmp:
                _extract(source, tmp)
                install_from_source(source_tree_in(tmp))
            return
        # Unpacked inside the virtual environment (<venv>/src/<archive name>/), where it stays:
        # the installed package's origin then names a folder that exists, and the archive.
        name = os.path.basename(source)
        for suffix in ARCHIVE_SUFFIXES:
            name = name.removesuffix(suffix)
        dest = os.path.join(sys.prefix, "src", name)
        shutil.rmtree(dest, ignore_errors=True)
        log(f"unpacking {source} into {dest}")
        _extract(source, dest)
        install_from_source(source_tree_in(dest))
        return
    is_local = os.path.isdir(source)
    target = os.path.abspath(source) if is_local else source
    if not is_local and not target.startswith("git+"):
        target = "git+" + target
    # No build isolation: detectron2's setup.py imports torch to build its extension against
    # the torch already installed here.
    pip("install", "--no-build-isolation", target)


def patch_setup_py(path: str) -> None:
    with open(path) as f:
        text = f.read()
    for old, new, why in SETUP_PATCHES:
        count = text.count(old)
        if count != 1:
            sys.exit(
                f"[install_detectron2] {path}: expected the line to patch ({why}) once, found it "
                f"{count} times. The {PYPI_DISTRIBUTION} sdist changed; install detectron2 from "
                "source instead: D2_SOURCE=<git URL or checkout> make install"
            )
        text = text.replace(old, new)
    with open(path, "w") as f:
        f.write(text)


def install_from_pypi() -> None:
    with tempfile.TemporaryDirectory(prefix="d2-sdist-") as tmp:
        # No build isolation: even computing the sdist's metadata runs setup.py, which imports
        # torch.
        pip(
            "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
            "-d", tmp, f"{PYPI_DISTRIBUTION}=={PYPI_VERSION}",
        )
        (sdist,) = glob.glob(os.path.join(tmp, "*.tar.gz"))
        _extract(sdist, tmp)
        src = os.path.join(tmp, f"{PYPI_DISTRIBUTION}-{PYPI_VERSION}")
        patch_setup_py(os.path.join(src, "setup.py"))
        pip("install", "--no-build-isolation", src)


def check_installed() -> None:
    """Import detectron2 in a fresh process and check the model-zoo configs came along."""
    code = (
        "import os, detectron2; "
        "p = os.path.join(os.path.dirname(detectron2.__file__), 'model_zoo', 'configs', "
        "'COCO-Detection', 'faster_rcnn_R_50_FPN_1x.yaml'); "
        "assert os.path.isfile(p), 'model-zoo configs missing: ' + p; "
        "print(detectron2.__version__, os.path.dirname(detectron2.__file__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"[install_detectron2] the installed detectron2 does not work:\n{out.stderr}")
    log(f"detectron2 {out.stdout.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source",
        default=os.environ.get("D2_SOURCE", ""),
        help="git URL, local checkout or source .tar.gz to build detectron2 from (default: $D2_SOURCE)",
    )
    args = parser.parse_args()

    current = installed_distribution()
    if current is not None and not (args.source and current == PYPI_DISTRIBUTION):
        log(f"keeping the detectron2 that is already importable (distribution: {current})")
        if args.source:
            log(f"D2_SOURCE={args.source} ignored: uninstall the current detectron2 to rebuild")
        return
    if args.source:
        if current == PYPI_DISTRIBUTION:
            pip("uninstall", "-y", PYPI_DISTRIBUTION)
        install_from_source(args.source)
    else:
        install_from_pypi()
    check_installed()


if __name__ == "__main__":
    main()
