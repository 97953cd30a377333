"""Fetch scripts' offline logic (checksums, resume, unpacking) and the layout check."""
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fpn_plugin.data import fetch as fetch_mod
from fpn_plugin.data.fetch import ARCHIVES, Archive, ChecksumError, download, extract, verify
from fpn_plugin.data.layout import check_layout

PROJECT = Path(__file__).resolve().parents[2]


def test_published_checksums_are_well_formed():
    for name, archives in ARCHIVES.items():
        for a in archives:
            assert len(a.digest) == {"md5": 32, "sha1": 40}[a.algo], a.url
            int(a.digest, 16)
            assert a.source and a.url.startswith("http")
    assert ARCHIVES["voc2007"][0].digest == "c52e279531787c972589f7e41ab4ae64"


def test_checksum_verification(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(b"some archive bytes")
    good = Archive("http://example.invalid/x.tar", "sha1", hashlib.sha1(b"some archive bytes").hexdigest(), ".", "test")
    verify(str(path), good)
    bad = Archive("http://example.invalid/x.tar", "md5", "0" * 32, ".", "test")
    with pytest.raises(ChecksumError, match=r"x.tar has md5 [0-9a-f]{32}, but x.tar should have 0{32} .*delete it"):
        verify(str(path), bad)


class _Response:
    """A stand-in for an HTTP response (no network in tests)."""

    def __init__(self, body, status):
        self._body, self.status = io.BytesIO(body), status
        self.headers = {"Content-Length": str(len(body))}

    def read(self, n=-1):
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_download_resumes_a_partial_file(tmp_path):
    data = bytes(range(256)) * 100
    dest = tmp_path / "big.zip"
    (tmp_path / "big.zip.part").write_bytes(data[:1000])
    seen = []

    def urlopen(request):
        seen.append(request.get_header("Range"))
        return _Response(data[1000:], 206)

    download("http://example.invalid/big.zip", str(dest), urlopen, chunk=777, progress=False)
    assert seen == ["bytes=1000-"] and dest.read_bytes() == data
    assert not (tmp_path / "big.zip.part").exists()

    # A server that ignores Range answers 200 with the whole file: start over, not append.
    (tmp_path / "b.zip.part").write_bytes(b"stale")
    download("http://example.invalid/b.zip", str(tmp_path / "b.zip"), lambda r: _Response(data, 200),
             progress=False)
    assert (tmp_path / "b.zip").read_bytes() == data


def test_download_that_stops_early_keeps_the_part_for_resuming(tmp_path):
    class Short(_Response):
        def __init__(self):
            super().__init__(b"abc", 200)
            self.headers = {"Content-Length": "10"}

    with pytest.raises(IOError, match="stopped at 3 of 10 bytes; run the fetch again to resume"):
        download("http://example.invalid/s.zip", str(tmp_path / "s.zip"), lambda r: Short(), progress=False)
    assert (tmp_path / "s.zip.part").read_bytes() == b"abc"


def _voc_tar(path):
    with tarfile.open(path, "w") as t:
        for name, text in [("VOCdevkit/VOC2007/ImageSets/Main/test.txt", "000001\n"),
                           ("VOCdevkit/VOC2007/Annotations/000001.xml", "<annotation/>"),
                           ("VOCdevkit/VOC2007/JPEGImages/000001.jpg", "jpg")]:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            t.addfile(info, io.BytesIO(text.encode()))


def test_fetch_verifies_unpacks_and_links_voc(tmp_path, monkeypatch):
    tar = tmp_path / "VOCtest.tar"
    _voc_tar(tar)
    body = tar.read_bytes()
    archive = Archive("http://example.invalid/VOCtest.tar", "md5", hashlib.md5(body).hexdigest(), ".", "test")
    monkeypatch.setitem(ARCHIVES, "voc_test", [archive])
    root = tmp_path / "root"
    fetch_mod.fetch("voc_test", str(root), urlopen=lambda r: _Response(body, 200))
    assert (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text() == "000001\n"
    assert os.path.islink(root / "VOC2007")
    assert (root / "downloads" / "VOCtest.tar.unpacked").exists()
    assert not (root / "downloads" / "VOCtest.tar").exists()  # archives removed once unpacked
    # A second run does nothing (no download).
    fetch_mod.fetch("voc_test", str(root), urlopen=lambda r: pytest.fail("downloaded again"))


def test_extract_refuses_paths_outside(tmp_path):
    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="outside"):
        extract(str(tar), str(tmp_path / "dest"))
    assert not (tmp_path / "outside.txt").exists()


def test_layout_check_says_what_is_missing(tmp_path):
    voc = tmp_path / "VOC2007"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000007\n")
    (voc / "Annotations" / "000005.xml").write_text("<annotation/>")
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    (tmp_path / "coco" / "val2017" / "000000000139.jpg").write_bytes(b"")
    report = check_layout(str(tmp_path), ["voc2007", "coco2017"])
    voc_problems = report["voc2007"]
    assert f"missing folder {voc / 'JPEGImages'}" in voc_problems
    assert f"{voc / 'ImageSets/Main/trainval.txt'} lists 2 image ids, expected 5011" in voc_problems
    assert f"1 annotations of trainval missing in {voc / 'Annotations'}, e.g. 000007" in voc_problems
    assert f"2 images of trainval missing in {voc / 'JPEGImages'}, e.g. 000005, 000007" in voc_problems
    assert f"missing list {voc / 'ImageSets/Main/test.txt'} (expected 4952 image ids)" in voc_problems
    coco = report["coco2017"]
    assert f"missing file {tmp_path / 'coco/annotations/instances_train2017.json'}" in coco
    assert f"missing folder {tmp_path / 'coco/train2017'} (expected 118287 images)" in coco
    assert f"incomplete folder {tmp_path / 'coco/val2017'}: 1 of 5000 images" in coco


def test_layout_script_exit_status(tmp_path):
    run = subprocess.run([sys.executable, str(PROJECT / "datasets" / "check_layout.py"), "voc2012",
                          "--root", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "voc2012: " in run.stdout and "missing list" in run.stdout
    assert "fix: python datasets/fetch_voc.py voc2012" in run.stdout


def test_one_image_extension_list_for_every_reader(tmp_path):
    # The VOC reader, image loading and predict.py's folder walk share one list.
    from fpn_plugin.data import voc
    from fpn_plugin.image_files import IMAGE_EXTENSIONS, is_image_file
    from fpn_plugin.inference import images

    assert images.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert is_image_file("a/B.JPG") and is_image_file("c.webp") and not is_image_file("d.xml")
    (tmp_path / "000005.PNG").write_bytes(b"")  # upper case, as some cameras write it
    found = voc._find_image(str(tmp_path), "000005", None)
    assert found == str(tmp_path / "000005.PNG")
    assert voc._find_image(str(tmp_path), "000007", None) == str(tmp_path / "000007.jpg")


def test_download_and_checksum_show_their_progress_on_stderr(tmp_path, capsys):
    data = bytes(range(256)) * 100  # 25.6 kB
    (tmp_path / "big.zip.part").write_bytes(data[:1000])
    download("http://example.invalid/big.zip", str(tmp_path / "big.zip"),
             lambda r: _Response(data[1000:], 206), chunk=7777)
    captured = capsys.readouterr()
    # tqdm's byte counter: from the resumed 1000 bytes to the whole file.
    assert "big.zip:   4%" in captured.err and "1.00k/25.6k" in captured.err
    assert "big.zip: 100%" in captured.err and "25.6k/25.6k" in captured.err
    assert captured.out == ""
    archive = Archive("http://example.invalid/big.zip", "md5", hashlib.md5(data).hexdigest(), ".", "test")
    verify(str(tmp_path / "big.zip"), archive)
    captured = capsys.readouterr()
    assert "big.zip: md5: 100%" in captured.err and "25.6k/25.6k" in captured.err


def test_without_tqdm_the_fetch_shows_no_progress_and_still_works(tmp_path, capsys, monkeypatch):
    # The datasets/ scripts may run where only the standard library is installed.
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `from tqdm import tqdm` fail
    data = b"x" * 5000
    download("http://example.invalid/a.tar", str(tmp_path / "a.tar"), lambda r: _Response(data, 200))
    verify(str(tmp_path / "a.tar"), Archive("http://example.invalid/a.tar", "sha1",
                                            hashlib.sha1(data).hexdigest(), ".", "test"))
    assert (tmp_path / "a.tar").read_bytes() == data
    assert capsys.readouterr().err == ""
