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


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_EXTENSIONS else "image"


def expand_inputs(specs: Sequence[str]) -> Inputs:
    """Expand files, folders (searched recursively for images) and glob patterns.

    A file is taken as an image whatever its extension (a corrupt or mislabelled file is
    reported when it is read); videos are recognised by extension.
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
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                found.problems.append((spec, f"folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
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
