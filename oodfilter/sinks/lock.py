"""One writer per manifest: an OS lock on ``<manifest>.lock``, held for the whole scan.

A POSIX record lock (``fcntl.lockf``) belongs to the process that took it: the kernel releases it when that
process exits, even after ``kill -9``, and — unlike ``flock`` — DataLoader workers forked from the scan do
not inherit it, so an orphaned worker cannot keep a killed scan's lock alive. The file records the holder,
for the message a second scan gets. The holder removes it when done (a refused run leaves nothing behind),
and a process that locks the file checks it is still the one at ``<manifest>.lock``: a file removed under
it would let two writers in. Folders created for the lock are removed too when the run fails. Being per
process, the lock does not exclude a second scan started from the same Python process.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json
from oodfilter.outputs import os_error

try:
    import fcntl
except ImportError:  # Windows: no fcntl; one writer is then up to the user
    fcntl = None  # type: ignore[assignment]


class ManifestLock:
    """Context manager holding the exclusive lock of one manifest.

    Args:
        manifest: The manifest file; the lock is ``<manifest>.lock`` beside it.

    Raises:
        InputError: another process holds the lock (the message names it), or the lock file cannot be
            created (the message names the folder).
        OutputError: the lock file cannot be written (a full disk; the message names it and the fix).

    """

    def __init__(self, manifest: str | Path) -> None:
        out = Path(manifest)
        self.path = out.with_name(f"{out.name}.lock")
        self._descriptor: int | None = None
        self._created: list[Path] = []  # folders made for the lock, deepest last

    def __enter__(self) -> ManifestLock:
        missing = [folder for folder in (self.path.parent, *self.path.parent.parents) if not folder.exists()]
        self._created = missing[::-1]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = self._open_locked()
        except BaseException:
            self._remove_created_folders()
            raise
        try:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        except OSError as error:  # a full disk: say so before any work is done, and leave nothing behind
            os.close(descriptor)
            with suppress(OSError):
                self.path.unlink()
            self._remove_created_folders()
            raise os_error("write the lock file", self.path, error) from error
        self._descriptor = descriptor
        return self

    def _open_locked(self) -> int:
        """Open (or create) the lock file and lock it; retry when it was removed meanwhile by its last holder."""
        while True:
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for any file
            except OSError as error:
                raise InputError(f"cannot create the lock file {self.path} ({error.strerror}); check that the "
                                 "folder exists and is writable") from error
            if fcntl is None:
                return descriptor
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:  # EACCES or EAGAIN: another process holds it
                holder = _holder(descriptor)
                os.close(descriptor)
                raise InputError(f"manifest {self.path.with_suffix('')} is being written by another scan ({holder}); "
                                 "wait for it to finish, or choose another --out") from error
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(current, os.fstat(descriptor)):
                return descriptor
            os.close(descriptor)  # the file this process locked is no longer the lock file: take the new one

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._descriptor is not None:
            with suppress(OSError):  # removed while still locked: a process that opened it meanwhile locks it
                self.path.unlink()  # only after this, finds it gone (_open_locked) and takes a new one
            os.close(self._descriptor)  # closing releases the lock
            self._descriptor = None
        if kind is not None:
            self._remove_created_folders()

    def _remove_created_folders(self) -> None:
        """Remove the folders made for this lock that are still empty (a refused run leaves nothing behind)."""
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (the run wrote something there), or gone
        self._created = []


def _holder(descriptor: int) -> str:
    try:
        info = parse_json(os.pread(descriptor, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
