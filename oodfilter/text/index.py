"""Deprecated module: renamed to :mod:`oodfilter.text.class_vectors` (kept for one release)."""

from oodfilter.deprecation import warn_deprecated
from oodfilter.text.class_vectors import ClassVectors as TextIndex
from oodfilter.text.class_vectors import build_class_vectors as build_text_index
from oodfilter.text.class_vectors import default_cache_dir, encode_captions

warn_deprecated("oodfilter.text.index", "oodfilter.text.class_vectors (ClassVectors, build_class_vectors)")

__all__ = ["TextIndex", "build_text_index", "default_cache_dir", "encode_captions"]
