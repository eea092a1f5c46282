"""Deprecated module: renamed to :mod:`oodfilter.data.dataset` (kept for one release)."""

from oodfilter.data.dataset import DecodedBatch, ImageFileDataset, collate_decoded
from oodfilter.deprecation import warn_deprecated

warn_deprecated("oodfilter.data.files", "oodfilter.data.dataset")

__all__ = ["DecodedBatch", "ImageFileDataset", "collate_decoded"]
