"""Names in open folders, reached inside a destination root without following a symbolic link.

Every file action and every undo step works on an :class:`At` (an open folder and a name in it), so a
path is looked up once: a folder swapped for a symbolic link after the check cannot redirect the step.
Inside the destination root each folder is opened with ``O_NOFOLLOW``; outside it (the user's own
folders, where the inputs came from) links are followed as the scan followed them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oodfilter.errors import OODFilterError

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20


class FileActionError(OODFilterError):
    """A file action or an undo step failed on the file system (full disk, no permission, read-only)."""


class UnsafePathError(FileActionError):
    """A path inside a destination root passes through a symbolic link (or a file where a folder was)."""


@dataclass(frozen=True)
class Fingerprint:
    """What a journaled name holds: a file's SHA-256, a symbolic link's target, or ``other`` (a folder...)."""

    kind: str
    value: str


@dataclass(frozen=True)
class At:
    """A name in an open folder (``folder`` is a file descriptor); ``path`` is for messages only."""

    folder: int
    name: str
    path: Path


def temp_name(name: str, token: str) -> str:
    """Return the hidden temporary name a file is written under before it gets ``name`` (token journaled)."""
    return f".{name[:100]}.{token}.oodtmp"


@contextmanager
def user_folder(folder: Path, create: bool = False) -> Iterator[int]:
    """Open one of the user's folders (links followed, as the scan followed them); ``create`` makes it."""
    with naming(folder):
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(folder, _FOLDER_FLAGS)
    try:
        yield handle
    finally:
        os.close(handle)


@contextmanager
def folder_inside(root: Path, folder: Path, create: bool = False) -> Iterator[int]:
    """Open ``folder`` (the root or below it) one component at a time, never through a symbolic link.

    Raises:
        UnsafePathError: the root is no longer its resolved self, or a component is a link or a file.
        FileNotFoundError: a folder is missing and ``create`` is false.

    """
    if os.path.realpath(root) != str(root):
        raise UnsafePathError(f"the destination root {root} now passes through a symbolic link")
    handle = _open_step(None, str(root), root, create=False)
    try:
        current = root
        for part in folder.relative_to(root).parts:
            current = current / part
            step = _open_step(handle, part, current, create)
            os.close(handle)
            handle = step
        yield handle
    finally:
        os.close(handle)


def _open_step(parent: int | None, name: str, path: Path, create: bool) -> int:
    try:
        return os.open(name, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        if not create or parent is None:
            raise
        with naming(path):
            os.mkdir(name, dir_fd=parent)
        return os.open(name, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(f"{path} is a symbolic link or a file, not a folder") from error
        raise


def lstat_at(at: At) -> os.stat_result | None:
    """``lstat`` the name (None when nothing is there)."""
    try:
        return os.stat(at.name, dir_fd=at.folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def fingerprint_at(at: At, follow: bool = False) -> Fingerprint | None:
    """Fingerprint the name (None when absent); ``follow`` reads through a link (the user's inputs only)."""
    try:
        info = os.stat(at.name, dir_fd=at.folder, follow_symlinks=follow)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return Fingerprint("symlink", os.readlink(at.name, dir_fd=at.folder))
    if not stat.S_ISREG(info.st_mode):
        return Fingerprint("other", "")
    with naming(at.path):
        handle = os.open(at.name, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW), dir_fd=at.folder)
        with os.fdopen(handle, "rb") as file:
            digest = hashlib.sha256()
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    return Fingerprint("file", digest.hexdigest())


def remove_at(at: At) -> None:
    """Remove a file or link by name (never a folder); missing is fine."""
    try:
        os.unlink(at.name, dir_fd=at.folder)
    except FileNotFoundError:
        return
    os.fsync(at.folder)


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` raised inside the full ``path`` (calls relative to an open folder lack it)."""
    try:
        yield
    except OSError as error:
        if error.filename == str(path) or error.errno is None:
            raise
        # OSError(errno, ...) builds the matching subclass (PermissionError, FileExistsError...).
        raise OSError(error.errno, error.strerror, str(path)) from error
