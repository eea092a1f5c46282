"""Atomic file writes: write a temporary file beside the target, then rename it over the target.

A reader (or a crash) never sees a half-written file. The result gets the usual permissions for new
files (0666 less the umask), not the private 0600 of a temporary file.

The temporary file is named ``.<name>.<random>.oodfilter-tmp`` and locked (``flock``) while it is written.
Any exception removes it; only a kill that runs no code (SIGKILL, a power cut) leaves it behind. Its
suffix is no image's, so no scan takes it for an input, and the next atomic write of the same target
removes it: the kernel dropped the dead writer's lock, which tells a stale file from one being written.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from oodfilter.outputs import os_error

try:
    import fcntl
except ImportError:  # Windows: no flock; stale temporary files are then left for the user
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".oodfilter-tmp"
# A stale file is also this old, so a file created an instant ago (not locked yet) is never taken for one.
_STALE_AFTER_S = 60.0
_NAME_BYTES = 100  # of the target's name kept in the temporary name (file names are at most 255 bytes)


def _umask() -> int:
    """Return the process's umask, read where Linux shows it so that no other thread sees it changed."""
    with suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o077)  # elsewhere set and restored: briefly private rather than briefly world-writable
    os.umask(umask)
    return umask


def new_file_mode() -> int:
    """Return the mode a new file gets under the umask (``0666 & ~umask``), as ``open`` would give it."""
    return 0o666 & ~_umask()


def new_folder_mode() -> int:
    """Return the mode a new folder gets under the umask (``0777 & ~umask``), as ``mkdir`` would give it."""
    return 0o777 & ~_umask()


def temp_prefix(target: Path) -> str:
    """Return the start of the temporary names of ``target``'s atomic writes (``.<name>.``, the name shortened)."""
    name = target.name
    while len(os.fsencode(name)) > _NAME_BYTES:
        name = name[:-1]
    return f".{name}."


def atomic_write(target: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)`` then move the file onto ``target``; clean up on failure.

    Raises:
        OutputError: the operating system refused (disk full, permission, read-only); no file is left.
    """
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path)
        handle, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise os_error("write", path, error) from error
    try:
        if fcntl is not None:
            with suppress(OSError):  # held until the rename: the file is being written (a cleaner keeps off)
                fcntl.flock(handle, fcntl.LOCK_EX)
        write(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except OSError as error:  # disk full, permission: no partial file is left, and the message says what to do
        Path(tmp).unlink(missing_ok=True)
        raise os_error("write", path, error) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)
    return path


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def remove_stale_temp_files(target: Path) -> None:
    """Remove the temporary files that killed atomic writes of ``target`` left beside it.

    A file counts as stale when no process holds its lock and it has not changed for a minute; a write
    in progress (here or in another process) is never touched. Errors are ignored: this only tidies up.
    """
    if fcntl is None:
        return
    prefix = temp_prefix(target)
    try:
        with os.scandir(target.parent) as entries:
            names = [entry.name for entry in entries if entry.name.startswith(prefix)
                     and entry.name.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False)]
    except OSError:
        return
    for name in names:
        with suppress(OSError):
            _remove_if_stale(target.parent / name)


def _remove_if_stale(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: a write in progress
            return
        if time.time() - os.fstat(descriptor).st_mtime >= _STALE_AFTER_S and os.path.samestat(
                os.fstat(descriptor), os.lstat(path)):
            path.unlink()
    finally:
        os.close(descriptor)
