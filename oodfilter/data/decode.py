"""Safe decoding of image files into RGB PIL images."""

from __future__ import annotations

import errno
import io
import numbers
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from oodfilter.data.remote import RemoteReadError, SourceUnavailableError, is_url, read_bytes
from oodfilter.data.shards import read_sample_image, split_sample_name
from oodfilter.errors import InputError

# Pillow's own decompression-bomb limit (~89.5 megapixels), applied before any pixel is decoded.
DEFAULT_MAX_PIXELS = 89_478_485
_HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


class ImageDecodeError(InputError):
    """An image file cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def check_max_pixels(max_pixels: int) -> int:
    """Return ``max_pixels`` when it is a usable decompression-bomb limit: a whole number of at least 1.

    Raises:
        InputError: 0 or less (every image would be refused), a fraction, a bool or not a number.

    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1:
        raise InputError(f"max_pixels must be a whole number of at least 1 (the most pixels an image may have; "
                         f"default {DEFAULT_MAX_PIXELS}), got {max_pixels!r}")
    return int(max_pixels)


@dataclass(frozen=True)
class ReducedImage:
    """An image decoded by :func:`load_reduced_rgb_image`: possibly a JPEG reduced by 1/2, 1/4 or 1/8.

    Attributes:
        image: 8-bit RGB, EXIF orientation applied.
        full_size: (width, height) of the image at full resolution, as displayed.
        box: The region of ``image`` (left, upper, right, lower, in its pixels) that shows the whole picture:
            ``image.size`` rounds the reduced size up, so a last row or column of pixels may stand for less
            than ``1 / scale`` of the full image (the whole of ``image`` when it was not reduced).

    """

    image: Image.Image
    full_size: tuple[int, int]
    box: tuple[float, float, float, float]

    @property
    def reduced(self) -> bool:
        """Whether the image was decoded smaller than its full size."""
        return self.image.size != self.full_size


def load_rgb_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB image, EXIF orientation applied.

    ``path`` is a local file, a URL (:mod:`oodfilter.data.remote`) or a shard's sample ``<shard>#<key>``
    (:mod:`oodfilter.data.shards`); the same checks apply to all three. Palette, grayscale, CMYK and 16-bit
    images are converted; transparency is composited on white.

    Raises:
        ImageDecodeError: missing file or broken link, no permission, empty, not an image, truncated
            or corrupt, or more than ``max_pixels`` pixels.
        SourceUnavailableError: the server of a URL or remote shard did not answer.
        InputError: ``max_pixels`` is not a whole number of at least 1 (:func:`check_max_pixels`).

    """
    return _load(path, max_pixels, None).image


def load_reduced_rgb_image(path: str | Path, min_size: tuple[int, int], *,
                           max_pixels: int = DEFAULT_MAX_PIXELS) -> ReducedImage:
    """Decode ``path`` as :func:`load_rgb_image` does, a large JPEG reduced in the DCT domain while it decodes.

    A JPEG at least twice ``min_size`` (width, height) on both sides, as displayed (after EXIF rotation), is
    decoded at 1/2, 1/4 or 1/8 of its size: the smallest of them that keeps both sides at or above
    ``min_size`` (libjpeg's scaled decoding, Pillow's ``Image.draft``; several times faster on a 12 MP
    photo). Any other image decodes in full. The decompression-bomb check applies to the full size, before
    any pixel is decoded. :mod:`oodfilter.data.draft` resizes the result as the model's preprocessing
    would resize the full image.

    Raises:
        ImageDecodeError: as :func:`load_rgb_image`.
        SourceUnavailableError: as :func:`load_rgb_image`.

    """
    return _load(path, max_pixels, min_size)


def _load(path: str | Path, max_pixels: int, min_size: tuple[int, int] | None) -> ReducedImage:
    """Read ``path`` (a file, a URL or a shard's sample) and decode it; errors name the file."""
    check_max_pixels(max_pixels)
    name = str(path)
    if is_url(name) or (split_sample_name(name) is not None and not os.path.lexists(name)):
        try:
            data = read_sample_image(name) if split_sample_name(name) is not None else read_bytes(name)
        except RemoteReadError as error:
            raise ImageDecodeError(name, error.reason) from error
        except SourceUnavailableError:
            raise
        except InputError as error:  # a shard gone or damaged since it was listed
            raise ImageDecodeError(name, str(error)) from error
        if not data:
            raise ImageDecodeError(name, "empty file")
        return _decode(io.BytesIO(data), name, max_pixels, min_size)
    file = Path(path)
    try:
        handle = _open_regular_file(file)
    except ImageDecodeError:
        raise
    except FileNotFoundError as error:
        reason = "broken symbolic link" if file.is_symlink() else "file not found"
        raise ImageDecodeError(file, reason) from error
    except PermissionError as error:
        raise ImageDecodeError(file, "permission denied") from error
    except IsADirectoryError as error:
        raise ImageDecodeError(file, "is a directory") from error
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ImageDecodeError(file, "symbolic link loop (its links lead back to each other)") from error
        raise ImageDecodeError(file, f"cannot be opened ({error.strerror or error})") from error
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageDecodeError(file, "empty file")
        return _decode(handle, file, max_pixels, min_size)


def load_rgb_bytes(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an encoded image held in memory (a dataset's image bytes) with the checks of :func:`load_rgb_image`.

    Raises:
        ImageDecodeError: empty, not an image, truncated or corrupt, or more than ``max_pixels`` pixels;
            the message names ``name``.
        InputError: ``max_pixels`` is not a whole number of at least 1 (:func:`check_max_pixels`).

    """
    check_max_pixels(max_pixels)
    if not data:
        raise ImageDecodeError(name, "empty file")
    return _decode(io.BytesIO(data), name, max_pixels, None).image


def _decode(handle: BinaryIO, name: str | Path, max_pixels: int, min_size: tuple[int, int] | None) -> ReducedImage:
    """Decode an open image stream (the bomb check before any pixel, errors named after ``name``).

    With ``min_size``, a large JPEG decodes reduced (:func:`load_reduced_rgb_image`).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        name, f"{width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)"
                    )
                extent = _reduce_while_decoding(image, min_size) if min_size is not None else None
                orientation = image.getexif().get(_ORIENTATION, 1) if extent is not None else 1
                image.load()
                rgb = to_rgb(ImageOps.exif_transpose(image))
                if extent is None:
                    return ReducedImage(rgb, rgb.size, (0.0, 0.0, float(rgb.width), float(rgb.height)))
                sideways = orientation in _SIDEWAYS
                return ReducedImage(rgb, (height, width) if sideways else (width, height),
                                    _displayed_box(orientation, image.size, extent))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as error:
        raise ImageDecodeError(name, "not a recognised image format") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(name, f"decompression bomb refused: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(name, f"corrupt or truncated image ({error})") from error


_ORIENTATION = 0x0112  # the EXIF tag
# EXIF orientations that turn the stored image by 90 degrees (transpose, rotate 270, transverse, rotate 90).
_SIDEWAYS = {5, 6, 7, 8}


def _reduce_while_decoding(image: Image.Image, min_size: tuple[int, int]) -> tuple[float, float] | None:
    """Ask libjpeg for the largest 1/2, 1/4 or 1/8 reduction of a JPEG that keeps ``min_size`` as displayed.

    Nothing is decoded here: only the decoder's scale is set (``Image.draft``). ``min_size`` is as the image
    will be displayed, so for a JPEG stored sideways (EXIF orientation 5-8) its sides are swapped into the
    stored image's. Returns the full image's extent in the reduced stored image's pixels (full size / scale),
    or None when the image is left alone: not a single-frame JPEG, or too small to reduce.
    """
    if not isinstance(image, JpegImagePlugin.JpegImageFile):
        return None
    width, height = min_size
    if image.getexif().get(_ORIENTATION) in _SIDEWAYS:
        width, height = height, width
    if image.width < 2 * width or image.height < 2 * height:
        return None  # no reduction keeps the floor: decode as before
    drafted = image.draft(image.mode, (width, height))
    if drafted is None:  # a JPEG Pillow cannot reduce (more than one tile): decoded in full
        return None
    _, (_, _, right, lower) = drafted
    return right, lower


_Box = tuple[float, float, float, float]


def _displayed_box(orientation: int, stored: tuple[int, int], extent: tuple[float, float]) -> _Box:
    """Return the region of the reduced image, as displayed after EXIF ``orientation``, that shows the picture.

    In the stored reduced image (``stored`` pixels) the picture covers ``(0, 0, *extent)``; a partial last
    column or row lies outside it, and each orientation moves that margin to another side.
    """
    w, h = stored
    cw, ch = extent
    boxes = {2: (w - cw, 0.0, w, ch), 3: (w - cw, h - ch, w, h), 4: (0.0, h - ch, cw, h), 5: (0.0, 0.0, ch, cw),
             6: (h - ch, 0.0, h, cw), 7: (h - ch, w - cw, h, w), 8: (0.0, w - cw, ch, w)}
    left, upper, right, lower = boxes.get(orientation, (0.0, 0.0, cw, ch))
    return float(left), float(upper), float(right), float(lower)


def _open_regular_file(file: Path) -> BinaryIO:
    """Open ``file`` for reading without blocking, and refuse anything but a regular file.

    What the path leads to (through any links) is checked before it is opened, so a FIFO or a device is
    never opened at all (opening some devices acts: a tape rewinds, a watchdog starts). The open itself
    uses O_NONBLOCK, so a FIFO swapped in after the check cannot block it, and fstat on the open
    descriptor checks again.
    """
    _require_regular(file, stat.S_IFMT(os.stat(file).st_mode))
    descriptor = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        _require_regular(file, stat.S_IFMT(os.fstat(descriptor).st_mode))
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def _require_regular(file: Path, kind: int) -> None:
    if kind == stat.S_IFDIR:
        raise IsADirectoryError(f"{file} is a directory")
    if kind != stat.S_IFREG:
        raise ImageDecodeError(file, f"not a regular file ({_KINDS.get(kind, 'special file')}); only regular files "
                                     "are read")


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as 8-bit RGB: palette, grayscale, CMYK and 16-bit converted, transparency on white."""
    if image.mode in _HIGH_BIT_MODES:
        image = Image.fromarray(_to_8bit(np.asarray(image, dtype=np.float64), image.mode), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float pixels onto 0..255 by their nominal range."""
    high = float(pixels.max()) if pixels.size else 0.0
    if mode == "F":
        scale = 255.0 if high <= 1.0 else 255.0 / max(high, 1e-12)
    elif high <= 255:
        scale = 1.0
    elif high <= 65535:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / high
    return np.clip(pixels * scale, 0, 255).round().astype(np.uint8)
