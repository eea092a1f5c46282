"""Old home of the model loaders, kept for one release so that existing imports keep working.

Import from the new homes instead: :func:`~oodfilter.model.factory.load_model` (or
``oodfilter.load_model``), :func:`~oodfilter.model.build.build_from_open_clip`,
:func:`~oodfilter.model.tiny.build_tiny_model`, :data:`~oodfilter.model.manifest.BUNDLE_MANIFEST` and
:mod:`oodfilter.model.pretrained`. This module will be removed in the next release.
"""

from __future__ import annotations

from oodfilter.model.build import build_from_open_clip
from oodfilter.model.factory import load_model
from oodfilter.model.manifest import BUNDLE_MANIFEST
from oodfilter.model.pretrained import DEFAULT_PRETRAINED, RANDOM_WEIGHTS
from oodfilter.model.tiny import build_tiny_model

__all__ = [
    "BUNDLE_MANIFEST",
    "DEFAULT_PRETRAINED",
    "RANDOM_WEIGHTS",
    "build_from_open_clip",
    "build_tiny_model",
    "load_model",
]
