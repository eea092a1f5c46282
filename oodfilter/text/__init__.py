"""Class lists, prompt templates, class vectors and their FAISS-backed on-disk text cache.

The names below are imported on first access (see :mod:`oodfilter.lazy`): ``oodfilter.text.templates``
and ``oodfilter.text.classes`` need neither torch nor FAISS, and the CLI reads them to build ``--help``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oodfilter.deprecation import deprecated_attribute
from oodfilter.lazy import lazy_attribute, lazy_dir

_EXPORTS = {
    "TEMPLATE_SETS": "oodfilter.text.templates",
    "ClassVectors": "oodfilter.text.class_vectors",
    "TextCache": "oodfilter.text.cache",
    "build_class_vectors": "oodfilter.text.class_vectors",
    "clean_class_names": "oodfilter.text.classes",
    "default_cache_dir": "oodfilter.text.class_vectors",
    "encode_captions": "oodfilter.text.class_vectors",
    "read_class_names": "oodfilter.text.classes",
    "resolve_templates": "oodfilter.text.templates",
}
_DEPRECATED = {"TextIndex": "ClassVectors", "build_text_index": "build_class_vectors", "EmbeddingStore": "TextCache"}

if TYPE_CHECKING:
    from oodfilter.text.cache import TextCache
    from oodfilter.text.class_vectors import ClassVectors, build_class_vectors, default_cache_dir, encode_captions
    from oodfilter.text.classes import clean_class_names, read_class_names
    from oodfilter.text.templates import TEMPLATE_SETS, resolve_templates


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        lazy_attribute(__name__, globals(), _EXPORTS, _DEPRECATED[name])  # the new name, for the alias to return
        return deprecated_attribute(__name__, globals(), _DEPRECATED, name)
    return lazy_attribute(__name__, globals(), _EXPORTS, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _EXPORTS)


__all__ = [
    "TEMPLATE_SETS",
    "ClassVectors",
    "TextCache",
    "build_class_vectors",
    "clean_class_names",
    "default_cache_dir",
    "encode_captions",
    "read_class_names",
    "resolve_templates",
]
