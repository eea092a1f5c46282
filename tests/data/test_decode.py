"""Safe image decoding: every awkward file gives a correct RGB image or a clear error."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from oodfilter.data import ImageDecodeError, load_rgb_image


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_modes_are_converted_to_rgb(tmp_path):
    cases = {
        "gray.png": Image.new("L", (8, 6), 128),
        "cmyk.jpg": Image.new("CMYK", (8, 6), (0, 255, 255, 0)),
        "palette.png": Image.new("RGB", (8, 6), (0, 0, 255)).convert("P"),
        "rgba.png": Image.new("RGBA", (8, 6), (255, 0, 0, 255)),
    }
    for name, image in cases.items():
        out = load_rgb_image(_save(image, tmp_path / name))
        assert out.mode == "RGB" and out.size == (8, 6), name
    assert load_rgb_image(tmp_path / "gray.png").getpixel((0, 0)) == (128, 128, 128)
    r, g, b = load_rgb_image(tmp_path / "cmyk.jpg").getpixel((0, 0))
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red


def test_transparency_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    out = load_rgb_image(_save(image, tmp_path / "alpha.png"))
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_images_keep_their_brightness(tmp_path):
    pixels = np.full((5, 5), 32768, dtype=np.uint16)
    out = load_rgb_image(_save(Image.fromarray(pixels), tmp_path / "deep.png"))
    assert out.getpixel((0, 0)) == (128, 128, 128)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 5, 10))  # red strip on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = load_rgb_image(_save(image, tmp_path / "rotated.jpg", exif=exif, quality=95))
    assert out.size == (10, 20)
    top_r, _, top_b = out.getpixel((5, 1))
    assert top_r > 200 and top_b < 60  # the left strip is now on top


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"hello, I am text", "not a recognised image format"),
    ],
)
def test_non_images_are_errors(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as caught:
        load_rgb_image(path)
    assert caught.value.reason == reason and str(path) in str(caught.value)


def test_truncated_jpeg_is_an_error(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:600])
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        load_rgb_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _save(Image.new("L", (200, 200)), tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        load_rgb_image(path, max_pixels=10_000)


def test_broken_symlink_and_missing_file(tmp_path):
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageDecodeError, match="broken symbolic link"):
        load_rgb_image(link)
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_rgb_image(tmp_path / "nothing.jpg")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "locked.png")
    path.chmod(0)
    try:
        with pytest.raises(ImageDecodeError, match="permission denied"):
            load_rgb_image(path)
    finally:
        path.chmod(0o600)


def test_tiny_one_pixel_image(tmp_path):
    out = load_rgb_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "dot.png"))
    assert out.getpixel((0, 0)) == (1, 2, 3)
