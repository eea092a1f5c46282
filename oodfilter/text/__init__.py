"""Class lists, prompt templates and the FAISS-backed text index."""

from oodfilter.text.classes import clean_class_names, read_class_names
from oodfilter.text.index import TextIndex, build_text_index, default_cache_dir, encode_captions
from oodfilter.text.store import EmbeddingStore
from oodfilter.text.templates import TEMPLATE_SETS, resolve_templates

__all__ = [
    "EmbeddingStore",
    "TEMPLATE_SETS",
    "TextIndex",
    "build_text_index",
    "clean_class_names",
    "default_cache_dir",
    "encode_captions",
    "read_class_names",
    "resolve_templates",
]
