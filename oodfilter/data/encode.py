"""Deprecated module: renamed to :mod:`oodfilter.data.loader` (kept for one release)."""

from oodfilter.data.loader import EncodedImages, encode_image_files, image_batches
from oodfilter.deprecation import warn_deprecated

warn_deprecated("oodfilter.data.encode", "oodfilter.data.loader")

__all__ = ["EncodedImages", "encode_image_files", "image_batches"]
