"""Expand what users type after ``--input`` into image files and videos."""
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence

from .images import IMAGE_EXTENSIONS

__all__ = ["VIDEO_EXTENSIONS", "Inputs", "expand_inputs"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class Inputs:
    """Images and videos to predict on, and the inputs that named nothing usable."""

    images: List[Path] = field(default_factory=list)
    videos: List[Path] = field(default_factory=list)
    problems: List[tuple] = field(default_factory=list)  # (input, reason)
    skipped: List[Path] = field(default_factory=list)  # files in folders that are neither


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_EXTENSIONS else "image"


def expand_inputs(specs: Sequence[str]) -> Inputs:
    """Expand files, folders (searched recursively for images and videos) and glob patterns.

    A file named directly is taken as an image whatever its extension (a corrupt or
    mislabelled file is reported when it is read); videos are recognised by extension. Files
    in folders that are neither are listed in ``skipped``, for the caller to say so.
    """
    found = Inputs()
    seen = set()

    def add(path: Path) -> None:
        if path.resolve() in seen:
            return
        seen.add(path.resolve())
        (found.videos if _kind(path) == "video" else found.images).append(path)

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            everything = sorted(p for p in path.rglob("*") if p.is_file())
            known = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
            files = [p for p in everything if p.suffix.lower() in known]
            found.skipped += [p for p in everything if p.suffix.lower() not in known]
            if not files:
                found.problems.append((spec, f"folder has no images or videos ({', '.join(known)})"))
            for file in files:
                add(file)
        elif path.is_file():
            add(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
            matches = [p for p in matches if p.is_file()]
            if not matches:
                found.problems.append((spec, "the pattern matches no file"))
            for match in matches:
                add(match)
        else:
            found.problems.append((spec, "no such file or folder"))
    return found
