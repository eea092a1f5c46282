"""Atomic file writes: write a temporary file beside the target, then rename it over the target.

A reader (or a crash) never sees a half-written file. The result gets the usual permissions for new
files (0666 less the umask), not the private 0600 of a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from oodfilter.outputs import os_error


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(target: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)`` then move the file onto ``target``; clean up on failure.

    Raises:
        OutputError: the operating system refused (disk full, permission, read-only); no file is left.
    """
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise os_error("write", path, error) from error
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except OSError as error:  # disk full, permission: no partial file is left, and the message says what to do
        Path(tmp).unlink(missing_ok=True)
        raise os_error("write", path, error) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
