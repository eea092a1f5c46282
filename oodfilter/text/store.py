"""Deprecated module: renamed to :mod:`oodfilter.text.cache` (kept for one release)."""

from oodfilter.deprecation import warn_deprecated
from oodfilter.text.cache import TextCache as EmbeddingStore
from oodfilter.text.cache import text_key

warn_deprecated("oodfilter.text.store", "oodfilter.text.cache (TextCache)")

__all__ = ["EmbeddingStore", "text_key"]
