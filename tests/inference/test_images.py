"""load_image: every input users pass becomes one RGB uint8 array, or a clear error."""
import numpy as np
import pytest
from PIL import Image

from fpn_plugin.inference.images import ImageLoadError, load_image


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_arrays_need_and_honour_an_explicit_channel_order(rgb):
    np.testing.assert_array_equal(load_image(rgb, "RGB"), rgb)
    np.testing.assert_array_equal(load_image(rgb[:, :, ::-1], "BGR"), rgb)
    with pytest.raises(ImageLoadError, match="channel_order='RGB' or 'BGR'"):
        load_image(rgb)


def test_four_channel_arrays_drop_alpha(rgb):
    alpha = np.full((5, 7, 1), 9, np.uint8)
    np.testing.assert_array_equal(load_image(np.concatenate([rgb, alpha], 2), "RGBA"), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], 2)
    np.testing.assert_array_equal(load_image(bgra, "BGRA"), rgb)


def test_grayscale_and_16_bit_arrays(rgb):
    gray = rgb[:, :, 0]
    out = load_image(gray)
    assert out.shape == (5, 7, 3) and (out == gray[..., None]).all()
    sixteen = gray.astype(np.uint16) * 257  # the same picture at 16 bits
    np.testing.assert_array_equal(load_image(sixteen), out)


def test_float_arrays_are_refused_with_the_fix():
    with pytest.raises(ImageLoadError, match=r"\(array \* 255\)"):
        load_image(np.zeros((4, 4, 3), np.float32), "RGB")


def test_files_in_every_mode(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[:, :, 1]).save(tmp_path / "gray.png")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(load_image(str(tmp_path / "rgba.png")), rgb)
    for name in ("gray.png", "gray16.png"):
        out = load_image(tmp_path / name)
        assert out.shape == (5, 7, 3) and (out == rgb[:, :, 1:2]).all(), name


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "phone.jpg")
    assert out.shape == (7, 5, 3)


def test_missing_and_corrupt_files_say_which_and_why(tmp_path):
    with pytest.raises(ImageLoadError, match="nope.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageLoadError, match="bad.jpg: not a readable image"):
        load_image(tmp_path / "bad.jpg")


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), color) for color in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = load_image(str(path))
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] > 200 and image[0, 0, 1] < 50  # red: the first frame
