"""Resolving a user's path without failing on a symbolic link loop.

``Path.resolve()`` raises ``RuntimeError`` (Python 3.11, 3.12) or ``OSError`` (3.13) when a path runs into
a link loop (``a -> b -> a``), and a user's folder may hold one. :func:`real_path` resolves every link that
resolves and leaves a looping one as it is, so the check that called it goes on and the loop is reported
where the file is read (one error row, naming it).
"""

from __future__ import annotations

import os
from pathlib import Path


def real_path(path: str | os.PathLike[str]) -> Path:
    """Return the absolute ``path`` with its symbolic links resolved, as far as they resolve (never raises)."""
    return Path(os.path.realpath(path))
