"""Rules every command that writes a file follows.

Nothing is replaced without ``--overwrite``; with it, only a thing of the expected kind is replaced; an
input never is; and an operating-system failure names the path and the fix.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from pathlib import Path

from oodfilter.errors import OutputError
from oodfilter.real_path import real_path

_FIXES = {
    errno.ENOSPC: "the disk is full: free some space and run again",
    errno.EDQUOT: "the disk quota is exceeded: free some space and run again",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "operation not permitted: choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose another folder",
}


def os_error(action: str, path: str | Path, error: OSError) -> OutputError:
    """Return an :class:`OutputError` for ``error`` that names ``path`` and what to do about it.

    Args:
        action: What failed, e.g. ``"write the manifest"``.
        path: The file or folder involved.
        error: The operating system's error.

    """
    fix = _FIXES.get(error.errno or 0, error.strerror or str(error))
    return OutputError(f"cannot {action} {path}: {fix}")


def check_output(
    path: str | Path,
    *,
    overwrite: bool,
    kind: str,
    is_expected_kind: Callable[[Path], bool],
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Refuse an output that would clobber something; return the path when it is free to write.

    Args:
        path: The output file.
        overwrite: The user passed ``--overwrite``.
        kind: What the command writes, for messages (``HTML report``).
        is_expected_kind: Whether an existing ``path`` is such an output (only those are replaced).
        inputs: Files the command reads; none of them may be the output, even with ``--overwrite``.

    Raises:
        OutputError: ``path`` is an input, exists without ``overwrite``, or exists and is not a ``kind``.

    """
    out = Path(path)
    resolved = real_path(out)
    for source in inputs:
        if real_path(source) == resolved:
            raise OutputError(f"{out} is an input of this command; write the {kind} to another file")
    if not (out.exists() or out.is_symlink()):
        return out
    if not overwrite:
        raise OutputError(f"{out} already exists: pass --overwrite to replace it, or choose another output file")
    if out.is_symlink() or not out.is_file() or not is_expected_kind(out):
        raise OutputError(f"--overwrite replaces only a {kind}, and {out} is not one; choose another output file")
    return out


def starts_with(*prefixes: bytes) -> Callable[[Path], bool]:
    """Return a check that a file's first bytes (after leading blanks) start with one of ``prefixes``."""

    def check(path: Path) -> bool:
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip().lower()
        return any(head.startswith(prefix.lower()) for prefix in prefixes)

    return check
