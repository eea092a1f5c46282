"""Class lists, prompt templates, class vectors and their FAISS-backed on-disk text cache."""

from oodfilter.deprecation import deprecated_attribute
from oodfilter.text.cache import TextCache
from oodfilter.text.class_vectors import ClassVectors, build_class_vectors, default_cache_dir, encode_captions
from oodfilter.text.classes import clean_class_names, read_class_names
from oodfilter.text.templates import TEMPLATE_SETS, resolve_templates

_DEPRECATED = {"TextIndex": "ClassVectors", "build_text_index": "build_class_vectors", "EmbeddingStore": "TextCache"}


def __getattr__(name: str) -> object:
    return deprecated_attribute(__name__, globals(), _DEPRECATED, name)


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
