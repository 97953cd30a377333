"""Which files are images: the one list of image file extensions every reader uses."""
from pathlib import Path
from typing import Iterator

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "image_file_candidates"]

# Lower case; the check ignores case (cameras and Windows tools write ".JPG"). All are formats
# that PIL, which every image reader here goes through, decodes (a GIF: its first frame).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def is_image_file(path) -> bool:
    """Whether ``path``'s extension is an image extension, in any case."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def image_file_candidates(stem: str) -> Iterator[str]:
    """``stem`` with each image extension, lower then upper case (``a.jpg``, ``a.JPG``, ...)."""
    for ext in IMAGE_EXTENSIONS:
        yield stem + ext
        yield stem + ext.upper()
