"""Safe decoding of image files into RGB PIL images."""

from __future__ import annotations

import errno
import io
import numbers
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
        return _decode(io.BytesIO(data), name, max_pixels)
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
        return _decode(handle, file, max_pixels)


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
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(handle: BinaryIO, name: str | Path, max_pixels: int) -> Image.Image:
    """Decode an open image stream (the bomb check before any pixel, errors named after ``name``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        name, f"{width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)"
                    )
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as error:
        raise ImageDecodeError(name, "not a recognised image format") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(name, f"decompression bomb refused: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(name, f"corrupt or truncated image ({error})") from error


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
