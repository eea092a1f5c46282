"""Copy, move and publish files so that a partial file never carries a final name.

A file is written under a hidden temporary name (built from a journaled token), fsynced, checked
against the fingerprint the journal recorded, then given its final name by a hard link, which, unlike a
rename, never replaces a file that is there; the temporary name is then removed. On one file system a
move is a hard link then the removal of the old name; across file systems it is that verified copy,
and the source is removed only once the copy reads back identical. A kill at any moment leaves the old
state, the new one, or both names holding the same bytes, never a partial file under a final name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from contextlib import suppress

from oodfilter.sinks.safe_paths import (
    At,
    FileActionError,
    Fingerprint,
    fingerprint_at,
    lstat_at,
    naming,
    remove_at,
    temp_name,
)

# Errors of link(2) on file systems (or settings) that refuse hard links: fall back to a checked rename.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
_CHUNK = 1 << 20
_FIXES = {
    errno.ENOSPC: "the disk is full: free some space there",
    errno.EDQUOT: "the disk quota is used up: free some space there",
    errno.EACCES: "permission denied: give this user access to it",
    errno.EPERM: "the operation is not permitted: give this user access to it",
    errno.EROFS: "the file system is read-only: remount it writable",
}


class ContentChangedError(FileActionError):
    """A file's bytes differ from its journaled fingerprint (changed while copied, or a bad copy)."""


def os_failure(error: OSError, doing: str, retry: str) -> FileActionError:
    """Turn an ``OSError`` into a :class:`FileActionError` that names the file, the cause and the fix."""
    where = error.filename or "an unnamed file"
    fix = _FIXES.get(error.errno or 0, "fix the cause")
    return FileActionError(
        f"could not {doing}: {error.strerror or error} at {where} ({fix}), then {retry}; "
        "no partial file was left behind"
    )


def write_all(handle: int, data: bytes) -> None:
    """Write every byte of ``data`` to the open file ``handle``."""
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def copy_at(src: At, dst: At, token: str, expected: Fingerprint, follow: bool) -> None:
    """Copy ``src`` to the free name ``dst`` through a temporary file, checked against ``expected``.

    ``follow`` reads through a symbolic link at ``src`` (a copy of a linked input); a ``symlink``
    fingerprint recreates the link itself.

    Raises:
        ContentChangedError: the bytes read differ from ``expected`` (nothing is left at ``dst``).
        FileExistsError: ``dst`` is taken (it is never replaced).

    """
    tmp = At(dst.folder, temp_name(dst.name, token), dst.path.with_name(temp_name(dst.name, token)))
    remove_at(tmp)  # a leftover of a run that was killed while writing it
    try:
        if expected.kind == "symlink":
            with naming(dst.path):
                os.symlink(expected.value, tmp.name, dir_fd=tmp.folder)
        elif _copy_bytes(src, tmp, dst, follow) != expected.value:
            raise ContentChangedError(f"{src.path} changed while it was being copied; it was left where it is")
        publish(tmp, dst)
    except BaseException:
        with suppress(OSError):
            remove_at(tmp)
        raise


def _copy_bytes(src: At, tmp: At, dst: At, follow: bool) -> str:
    with naming(src.path):
        source = os.open(src.name, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW), dir_fd=src.folder)
    try:
        info = os.fstat(source)
        with naming(dst.path):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            target = os.open(tmp.name, flags, 0o600, dir_fd=tmp.folder)
        try:
            digest = hashlib.sha256()
            while True:
                with naming(src.path):
                    chunk = os.read(source, _CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                with naming(dst.path):
                    write_all(target, chunk)
            with naming(dst.path):
                os.fchmod(target, stat.S_IMODE(info.st_mode))
                os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
                os.fsync(target)
        finally:
            os.close(target)
    finally:
        os.close(source)
    return digest.hexdigest()


def place(src: At, dst: At) -> bool:
    """Give the file (or link) at ``src`` the name ``dst`` too, never replacing what is at ``dst``.

    Returns:
        True when ``src`` still exists (a hard link was made), False when it was renamed (a file system
        without hard links; ``dst`` was checked free just before).

    Raises:
        FileExistsError: ``dst`` is taken.
        OSError: ``errno.EXDEV`` when the two are on different file systems.

    """
    with naming(dst.path):
        try:
            os.link(src.name, dst.name, src_dir_fd=src.folder, dst_dir_fd=dst.folder, follow_symlinks=False)
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
            if lstat_at(dst) is not None:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst.path)) from error
            os.rename(src.name, dst.name, src_dir_fd=src.folder, dst_dir_fd=dst.folder)
            os.fsync(src.folder)
            os.fsync(dst.folder)
            return False
        os.fsync(dst.folder)
    return True


def publish(tmp: At, dst: At) -> None:
    """Give the finished temporary file ``tmp`` its final name ``dst`` (never replacing), then drop ``tmp``."""
    if place(tmp, dst):
        remove_at(tmp)


def move_at(src: At, dst: At, token: str, expected: Fingerprint) -> None:
    """Move ``src`` to the free name ``dst``: hard link then unlink, or across file systems a verified copy.

    Raises:
        ContentChangedError: across file systems, the copy did not read back as ``expected`` (it is
            removed again and ``src`` is kept).
        FileExistsError: ``dst`` is taken.

    """
    try:
        place(src, dst)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        copy_at(src, dst, token, expected, follow=False)
        if fingerprint_at(dst) != expected:
            remove_at(dst)
            raise ContentChangedError(
                f"the copy of {src.path} at {dst.path} did not read back identical; {src.path} was kept"
            ) from error
    with naming(src.path):
        remove_at(src)
