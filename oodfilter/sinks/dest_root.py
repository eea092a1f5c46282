"""The destination root's marker: proof that a folder is one a scan put files in, and the journal's key.

A journal line names its destination root, and an edited line could name any folder (say the user's
home) or any file to make ``undo`` act there. So the scan writes a small marker file into the root
holding a random key, and signs every journal line with it (an HMAC). ``undo`` acts on a line only when
the root it names carries the marker (a plain file, reached without a link) and the line verifies under
its key. When an undo leaves the root holding nothing but the marker, the marker goes too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from contextlib import suppress
from pathlib import Path

from oodfilter.sinks.safe_paths import FileActionError, folder_inside, naming

MARKER = ".oodfilter-dest.json"
_KEY = re.compile(r"[0-9a-f]{64}")
_MAX_MARKER = 4096


def claim_root(root: Path) -> str:
    """Create the (resolved) root if needed and return its marker's key, writing the marker if absent.

    Raises:
        FileActionError: the root cannot be created, or holds a marker oodfilter did not write.

    """
    with naming(root):
        root.mkdir(parents=True, exist_ok=True)
    with folder_inside(root, root) as handle:
        found = _read_marker(handle)
        if found is None:
            key = secrets.token_hex(32)
            if _write_marker(handle, root / MARKER, key):
                return key
            found = _read_marker(handle)  # another scan wrote it just now
    if not found:
        raise FileActionError(
            f"{root / MARKER} is not a marker oodfilter wrote; remove it, or choose another --dest"
        )
    return found


def root_key(root: Path) -> str | None:
    """Return the key of ``root``'s marker (a plain file, reached link-free), or None when there is none."""
    try:
        with folder_inside(root, root) as handle:
            return _read_marker(handle) or None
    except (OSError, FileActionError):
        return None


def release_root(root: Path, key: str) -> None:
    """Remove the marker when it is the last thing left in the root (the root itself stays)."""
    with suppress(OSError, FileActionError), folder_inside(root, root) as handle:
        if _read_marker(handle) == key and os.listdir(handle) == [MARKER]:
            os.unlink(MARKER, dir_fd=handle)
            os.fsync(handle)


def _read_marker(folder: int) -> str | None:
    """Return the marker's key; None when there is no marker, "" when it is not a valid one (or a link)."""
    try:
        handle = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    with os.fdopen(handle, "rb") as file:
        data = file.read(_MAX_MARKER)
    try:
        key = json.loads(data)["key"]
    except (ValueError, KeyError, TypeError):
        return ""
    return key if isinstance(key, str) and _KEY.fullmatch(key) else ""


def _write_marker(folder: int, path: Path, key: str) -> bool:
    text = {"written_by": "oodfilter scan --action", "purpose": "signs the journal that 'oodfilter undo' reads",
            "key": key}
    with naming(path):
        try:
            handle = os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder)
        except FileExistsError:
            return False
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(json.dumps(text).encode("utf-8") + b"\n")
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            with suppress(OSError):
                os.unlink(MARKER, dir_fd=folder)
            raise
        os.fsync(folder)
    return True
