"""The user's own journal key: a secret in the user's state folder that signs every file-action journal.

A journal says which files ``undo`` may move, create or remove, and a journal (or a key) found beside the
files proves nothing: whoever can write that folder can write them too. So every journal is signed (an
HMAC) with a random key that lives in the user's own state folder (``$OODFILTER_STATE_DIR``, else the
platform's user state folder, e.g. ``~/.local/state/oodfilter``), created on first use, readable by the
user alone (0600, in a folder only the user can change). ``undo`` acts only on journals that verify under
it: ones this user's oodfilter wrote.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from contextlib import suppress
from pathlib import Path

import platformdirs

from oodfilter.errors import OODFilterError

STATE_ENV = "OODFILTER_STATE_DIR"
KEY_FILE = "journal.key"
_KEY = re.compile(rb"([0-9a-f]{64})\n?")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class JournalKeyError(OODFilterError):
    """The user's journal key cannot be made or trusted (others may read or replace it); the message says how."""


def state_dir() -> Path:
    """Return the user's oodfilter state folder: ``$OODFILTER_STATE_DIR`` if set, else the platform's."""
    override = os.environ.get(STATE_ENV)
    return Path(override) if override else Path(platformdirs.user_state_dir("oodfilter"))


def key_path() -> Path:
    """Return where the user's journal key is kept."""
    return state_dir() / KEY_FILE


def journal_key(create: bool) -> bytes | None:
    """Return the user's journal key; with ``create``, make it first if there is none (else return None).

    Raises:
        JournalKeyError: the key or its folder could be read or replaced by another user, is not a plain
            file, or cannot be written; the message names the file and the fix.

    """
    path = key_path()
    if not path.parent.is_dir():
        if not create:
            return None
        _make_folder(path.parent)
    _check_private(path.parent, folder=True)
    key = _read(path)
    if key is None and create:
        _write(path)
        key = _read(path)
        if key is None:
            raise JournalKeyError(f"the journal key {path} vanished right after it was written; check what removes "
                                  f"files there, or set {STATE_ENV} to a folder of your own")
    return key


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise JournalKeyError(f"cannot create {folder} for the journal key ({error.strerror or error}); set "
                              f"{STATE_ENV} to a folder of your own") from error


def _check_private(path: Path, folder: bool, info: os.stat_result | None = None) -> None:
    """Refuse a key (or its folder) another user could read, or a folder another user could write into."""
    info = info or os.stat(path)
    what = "folder of the journal key" if folder else "journal key"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise JournalKeyError(f"the {what} {path} belongs to another user; remove it (or set {STATE_ENV} to a "
                              "folder of your own), and oodfilter makes a new one")
    if folder and stat.S_IMODE(info.st_mode) & 0o022:
        raise JournalKeyError(f"other users may write into the {what} {path} and replace the key; run: "
                              f"chmod go-w {path}")
    if not folder and stat.S_IMODE(info.st_mode) & 0o077:
        raise JournalKeyError(f"other users may read the {what} {path} and sign journals with it; run: "
                              f"chmod 600 {path}")


def _read(path: Path) -> bytes | None:
    try:
        handle = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as error:
        raise JournalKeyError(f"cannot read the journal key {path} ({error.strerror or error}); it must be a plain "
                              "file of yours (remove it, and oodfilter makes a new one)") from error
    with os.fdopen(handle, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise JournalKeyError(f"the journal key {path} is not a plain file; remove it, and oodfilter makes a "
                                  "new one")
        _check_private(path, folder=False, info=info)
        found = _KEY.fullmatch(file.read(200))
    if found is None:
        raise JournalKeyError(f"the journal key {path} is damaged; remove it (journals it signed can then no longer "
                              "be undone automatically) and oodfilter makes a new one")
    return bytes.fromhex(found.group(1).decode("ascii"))


def _write(path: Path) -> None:
    """Write a new key without ever replacing one (a private temporary file, then a hard link)."""
    tmp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(8)}.tmp")
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        with os.fdopen(handle, "wb") as file:
            file.write(secrets.token_hex(32).encode("ascii") + b"\n")
            file.flush()
            os.fsync(file.fileno())
        with suppress(FileExistsError):  # another scan made one just now: theirs is kept
            os.link(tmp, path)
    except OSError as error:
        raise JournalKeyError(f"cannot write the journal key {path} ({error.strerror or error}); set {STATE_ENV} "
                              "to a folder of your own") from error
    finally:
        with suppress(OSError):
            os.unlink(tmp)
