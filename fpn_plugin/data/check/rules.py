"""What the checkers ask of every image and box, and their progress bar.

Each rule reports to a :class:`~fpn_plugin.data.check.report.Report` what training will do
(drop, clip, skip), as :mod:`fpn_plugin.data.boxes` and detectron2's image reader do it.
"""
import os
import sys
from typing import Iterable, Optional

from detectron2.structures import BoxMode

from ..boxes import judge_box, to_xyxy
from .report import Report

__all__ = ["progress", "check_image", "check_box"]

# A check that ends sooner shows no bar at all (most datasets of a few hundred images).
PROGRESS_DELAY_S = 2.0


def progress(items: Iterable, total: int, what: str):
    """``items``, with a tqdm bar of ``total`` on stderr once the work has taken a few seconds.

    On stderr so that the report on stdout stays as it is (a pipeline may parse it).
    """
    from tqdm import tqdm

    return tqdm(items, total=total, desc=f"checking {what}", file=sys.stderr, leave=False,
                delay=PROGRESS_DELAY_S)


def image_problem(path: str) -> Optional[tuple]:
    """(kind, message) when the image is missing or unreadable, else ("size", (width, height))."""
    from PIL import Image

    if not os.path.isfile(path):
        return ("missing image", "the file does not exist")
    try:
        with Image.open(path) as im:
            im.verify()  # reads the file's structure without decoding all pixels
        with Image.open(path) as im:
            # As detectron2's reader sees it: EXIF orientations 5-8 turn the image by 90 degrees.
            width, height = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            return ("size", (width, height))
    except Exception as e:  # PIL raises many types for broken files
        return ("unreadable image", f"cannot be read as an image ({type(e).__name__}: {e})")


def check_image(report: Report, path: str, file: str, where: str, width, height, check_images):
    """Report a missing or unreadable image, or one whose size is not the annotated one."""
    if not check_images:
        return
    result = image_problem(path)
    if result[0] != "size":
        report.add(result[0], file, where, f"{path}: {result[1]}")
    elif width and height and to_xyxy([*result[1], 0, 0], BoxMode.XYXY_ABS) != to_xyxy(
            [width, height, 0, 0], BoxMode.XYXY_ABS):
        report.add("image size mismatch", file, where,
                   f"{path} is {result[1][0]}x{result[1][1]} but the annotation says "
                   f"{width}x{height}")


def check_box(report, file, where, x0, y0, x1, y1, width, height):
    """Report what the box rule (fpn_plugin.data.boxes), which loading applies, does to a box
    given in XYXY_ABS; returns False when it drops it."""
    verdict, _ = judge_box((x0, y0, x1, y1), width, height)
    box = f"box (x0={x0}, y0={y0}, x1={x1}, y1={y1})"
    if verdict == "NaN/inf":
        report.add("non-finite box", file, where,
                   f"{box} has a NaN or infinite coordinate: training drops it; fix or remove it")
    elif verdict == "zero or negative size":
        report.add("zero-area box", file, where, f"{box} has no area: training drops it; fix or remove it")
    elif verdict in ("outside the image", "clipped"):
        what = "drops it" if verdict == "outside the image" else "clips it to the image"
        report.add("box outside image", file, where,
                   f"{box} is not inside the {width}x{height} image: training {what}; fix it")
    return verdict not in ("NaN/inf", "zero or negative size", "outside the image")
