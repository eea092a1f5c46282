"""Image decoding and data sources."""

from oodfilter.data.decode import ImageDecodeError, load_rgb_image

__all__ = [
    "ImageDecodeError",
    "load_rgb_image",
]
