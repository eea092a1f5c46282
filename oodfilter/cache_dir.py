"""Where oodfilter keeps its caches: text vectors, prepared method state, downloaded models."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "OODFILTER_CACHE_DIR"


def default_cache_dir() -> Path:
    """Return the cache root: ``$OODFILTER_CACHE_DIR`` if set, else the user's cache folder."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir("oodfilter"))
