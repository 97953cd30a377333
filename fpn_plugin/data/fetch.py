"""Download and unpack Pascal VOC and COCO into the datasets root: resumable, checksums verified.

Used by ``datasets/fetch_voc.py`` and ``datasets/fetch_coco.py`` (or
``python -m fpn_plugin.data.fetch voc2007 coco2017 --root datasets``). An interrupted download
resumes where it stopped (HTTP Range) on the next run; a finished archive is verified against
its published checksum before it is unpacked, and a mismatch says which file to delete.
Downloads and checksums show a tqdm byte counter on stderr (none when tqdm is not installed).

This module and :mod:`fpn_plugin.data.layout` import only the standard library (and tqdm if it
is there): the ``datasets/`` scripts load them without the package and its dependencies.
"""
import argparse
import hashlib
import os
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

__all__ = ["ARCHIVES", "ChecksumError", "fetch", "main"]


@dataclass(frozen=True)
class Archive:
    """One file to download.

    Attributes:
        url: where to download it.
        algo: "md5" or "sha1".
        digest: its published checksum.
        subdir: where to unpack it, relative to the datasets root.
        source: where the checksum is published.
    """

    url: str
    algo: str
    digest: str
    subdir: str
    source: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_TORCHVISION = "torchvision.datasets.voc (DATASET_YEAR_DICT)"
_GLUONCV = "gluon-cv scripts/datasets/mscoco.py"
_PADDLE = "PaddleDetection dataset/coco download table"
_VOC = "https://thor.robots.ox.ac.uk/pascal/VOC"
_COCO = "http://images.cocodataset.org"

ARCHIVES: Dict[str, List[Archive]] = {
    "voc2007": [
        Archive(f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar", "md5",
                "c52e279531787c972589f7e41ab4ae64", ".", _TORCHVISION),
        Archive(f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar", "md5",
                "b6e924de25625d8de591ea690078ad9f", ".", _TORCHVISION),
    ],
    "voc2012": [
        Archive(f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar", "md5",
                "6cd6e144f989b92b3379bac3b3de84fd", ".", _TORCHVISION),
    ],
    "coco2017": [
        Archive(f"{_COCO}/annotations/annotations_trainval2017.zip", "sha1",
                "8551ee4bb5860311e79dace7e79cb91e432e78b3", "coco", _GLUONCV),
        Archive(f"{_COCO}/zips/val2017.zip", "sha1",
                "4950dc9d00dbe1c933ee0170f5797584351d2a41", "coco", _GLUONCV),
        Archive(f"{_COCO}/zips/train2017.zip", "sha1",
                "10ad623668ab00c62c096f0ed636d6aff41faca5", "coco", _GLUONCV),
    ],
    "coco2014": [
        Archive(f"{_COCO}/annotations/annotations_trainval2014.zip", "md5",
                "0a379cfc70b0e71301e0f377548639bd", "coco", _PADDLE),
        Archive(f"{_COCO}/zips/val2014.zip", "md5",
                "a3d79f5ed8d289b7a7554ce06a5782b3", "coco", _PADDLE),
        Archive(f"{_COCO}/zips/train2014.zip", "md5",
                "0da8c0bd3d6becc4dcb32757491aca88", "coco", _PADDLE),
    ],
}


class ChecksumError(RuntimeError):
    """A downloaded file does not have its published checksum."""


class _NoBar:
    """What :func:`_bar` gives without tqdm: no progress shown."""

    def update(self, n):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _bar(total: Optional[int], desc: str, initial: int = 0, show: bool = True):
    """A tqdm byte counter on stderr, or one that shows nothing when ``show`` is False, the
    size is unknown or tqdm is not installed."""
    if not show or not total:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # the datasets/ scripts run without the package's dependencies
        return _NoBar()
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                file=sys.stderr)


def file_digest(path: str, algo: str, chunk: int = 1 << 20, progress: bool = False) -> str:
    """The hex digest of a file, read in chunks (archives are up to 18 GB).

    Args:
        progress: show a byte counter on stderr.
    """
    h = hashlib.new(algo)
    with open(path, "rb") as f, _bar(os.path.getsize(path), f"{os.path.basename(path)}: {algo}",
                                     show=progress) as bar:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def verify(path: str, archive: Archive, progress: bool = True) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the archive's published checksum.

    Args:
        progress: show a byte counter on stderr while the checksum is computed.
    """
    actual = file_digest(path, archive.algo, progress=progress)
    if actual != archive.digest.lower():
        raise ChecksumError(
            f"{path} has {archive.algo} {actual}, but {archive.filename} should have "
            f"{archive.digest} (published in {archive.source}). The file is corrupt or "
            f"incomplete: delete it and run the fetch again."
        )


def download(url: str, dest: str, urlopen: Callable = urllib.request.urlopen,
             chunk: int = 1 << 20, progress: bool = True) -> str:
    """Download ``url`` to ``dest``, resuming a previous partial download (``dest + '.part'``).

    The partial file is renamed to ``dest`` only when the download is complete.

    Args:
        url: what to download.
        dest: the final path.
        urlopen: ``urllib.request.urlopen`` or a stand-in (tests).
        chunk: bytes read at a time.
        progress: show a byte counter on stderr (when the server gives the size).
    """
    part = dest + ".part"
    start = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "fpn_plugin-fetch"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    with urlopen(request) as response:
        status = getattr(response, "status", 200)
        if start and status != 206:
            start = 0  # the server ignored the Range request: start over
        total = response.headers.get("Content-Length")
        total = int(total) + start if total is not None else None
        with open(part, "ab" if start else "wb") as f, _bar(
                total, os.path.basename(dest), initial=start, show=progress) as bar:
            for block in iter(lambda: response.read(chunk), b""):
                f.write(block)
                bar.update(len(block))
    if total is not None and os.path.getsize(part) != total:
        raise IOError(
            f"Download of {url} stopped at {os.path.getsize(part)} of {total} bytes; run the "
            "fetch again to resume."
        )
    os.replace(part, dest)
    return dest


def _safe_members(names: Sequence[str], dest: str) -> None:
    root = os.path.realpath(dest)
    for name in names:
        target = os.path.realpath(os.path.join(dest, name))
        if target != root and not target.startswith(root + os.sep):
            raise ValueError(f"Archive member {name!r} would be written outside {dest}; refusing.")


def extract(path: str, dest: str) -> None:
    """Unpack a .tar or .zip into ``dest``, refusing members that would land outside it."""
    os.makedirs(dest, exist_ok=True)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            _safe_members(z.namelist(), dest)
            z.extractall(dest)
    else:
        with tarfile.open(path) as t:
            _safe_members(t.getnames(), dest)
            t.extractall(dest)


def _link_voc(root: str) -> None:
    """The VOC tars unpack to VOCdevkit/VOC20xx; detectron2 expects <root>/VOC20xx."""
    for year in ("VOC2007", "VOC2012"):
        src = os.path.join(root, "VOCdevkit", year)
        link = os.path.join(root, year)
        if os.path.isdir(src) and not os.path.lexists(link):
            os.symlink(os.path.join("VOCdevkit", year), link)


def fetch(name: str, root: str, keep_archives: bool = False,
          urlopen: Callable = urllib.request.urlopen) -> None:
    """Download, verify and unpack one dataset (a key of :data:`ARCHIVES`) into ``root``."""
    if name not in ARCHIVES:
        raise ValueError(f"Unknown dataset {name!r}; choose from {sorted(ARCHIVES)}.")
    downloads = os.path.join(root, "downloads")
    os.makedirs(downloads, exist_ok=True)
    for archive in ARCHIVES[name]:
        path = os.path.join(downloads, archive.filename)
        stamp = path + ".unpacked"
        if os.path.exists(stamp):
            print(f"{archive.filename}: already unpacked")
            continue
        if not os.path.exists(path):
            print(f"{archive.filename}: downloading from {archive.url}")
            download(archive.url, path, urlopen)
        print(f"{archive.filename}: verifying {archive.algo}")
        verify(path, archive)
        print(f"{archive.filename}: unpacking into {os.path.join(root, archive.subdir)}")
        extract(path, os.path.join(root, archive.subdir))
        open(stamp, "w").close()
        if not keep_archives:
            os.remove(path)
    _link_voc(root)


def main(argv: Optional[Sequence[str]] = None, default: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description="Fetch Pascal VOC / COCO into the datasets root.")
    p.add_argument("datasets", nargs="*", default=list(default),
                   help=f"any of {sorted(ARCHIVES)} (default: {' '.join(default) or 'none'})")
    p.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
                   help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    args = p.parse_args(argv)
    if not args.datasets:
        p.error("name at least one dataset")
    for name in args.datasets:
        fetch(name, args.root, args.keep_archives)
    print(f"Done. Check the layout with: python datasets/check_layout.py --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
