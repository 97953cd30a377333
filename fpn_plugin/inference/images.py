"""Turn what users pass for an image (path, PIL image, array) into one RGB uint8 array.

DefaultPredictor takes one BGR array and trusts it; users hand it RGB arrays, grayscale,
RGBA, 16-bit scans and phone photos that are rotated by EXIF only. Here each of those is
converted explicitly, and anything ambiguous is an error that says what to pass instead.
"""
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..image_files import IMAGE_EXTENSIONS

__all__ = ["ImageLoadError", "load_image", "IMAGE_EXTENSIONS"]

_ORDERS = {3: ("RGB", "BGR"), 4: ("RGBA", "BGRA")}


class ImageLoadError(ValueError):
    """An input could not be read or converted; the message says which and why."""


def _from_16_bit(array: np.ndarray) -> np.ndarray:
    # The full 16-bit range maps onto 0..255 (65535 / 257 = 255), the same for every image.
    if array.min() < 0 or array.max() > 65535:
        raise ImageLoadError(f"integer image values span {array.min()}..{array.max()}, not 0..65535")
    return np.round(array.astype(np.float32) / 257.0).astype(np.uint8)


def _from_pil(image: Image.Image) -> np.ndarray:
    # Phones store the rotation in EXIF; models must see the picture as people do.
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        gray = _from_16_bit(np.asarray(image))
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        raise ImageLoadError("floating-point ('F' mode) images are not supported; save as 8 or 16 bit")
    # Grayscale, palette, RGBA (alpha dropped), CMYK, YCbCr: PIL's conversion is exact for them.
    return np.asarray(image.convert("RGB"))


def _from_array(array: np.ndarray, channel_order: Optional[str]) -> np.ndarray:
    if array.dtype == np.uint16:
        array = _from_16_bit(array)
    elif array.dtype != np.uint8:
        raise ImageLoadError(
            f"array images must be uint8 (0..255) or uint16, got {array.dtype}; for floats in "
            "0..1 pass (array * 255).round().astype(np.uint8)"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    channels = array.shape[2] if array.ndim == 3 else None
    if channels not in _ORDERS:
        raise ImageLoadError(f"an image array must be HxW, HxWx1, HxWx3 or HxWx4, got {array.shape}")
    if channel_order not in _ORDERS[channels]:
        raise ImageLoadError(
            f"a {channels}-channel array needs channel_order={' or '.join(map(repr, _ORDERS[channels]))}"
            f" (got {channel_order!r}): OpenCV gives BGR, PIL/matplotlib/imageio give RGB"
        )
    rgb = array[:, :, :3] if channel_order.startswith("RGB") else array[:, :, 2::-1]
    return np.ascontiguousarray(rgb)


def load_image(
    image: Union[str, os.PathLike, Image.Image, np.ndarray], channel_order: Optional[str] = None
) -> np.ndarray:
    """Return an image as an HxWx3 RGB uint8 array.

    Args:
        image: a file path, a PIL image (EXIF orientation applied, any mode but float), or an
            array: HxW or HxWx1 grayscale, HxWx3, HxWx4; uint8, or uint16 scaled to 8 bits.
        channel_order: for 3- and 4-channel arrays, "RGB"/"BGR" or "RGBA"/"BGRA"; required,
            because nothing in an array says which it is.

    Raises:
        ImageLoadError: the file is missing or unreadable, or the input is ambiguous.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            with Image.open(path) as opened:
                opened.load()
                return _from_pil(opened)
        except FileNotFoundError:
            raise ImageLoadError(f"{path}: no such file") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ImageLoadError(f"{path}: not a readable image ({e})") from None
        except ImageLoadError as e:
            raise ImageLoadError(f"{path}: {e}") from None
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image, channel_order)
    raise ImageLoadError(f"cannot read an image from a {type(image).__name__}; pass a path, PIL image or array")
