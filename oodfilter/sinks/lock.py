"""One writer per manifest: an OS lock on ``<manifest>.lock``, held for the whole scan.

A POSIX record lock (``fcntl.lockf``) belongs to the process that took it: the kernel releases it when that
process exits, even after ``kill -9``, and — unlike ``flock`` — DataLoader workers forked from the scan do
not inherit it, so an orphaned worker cannot keep a killed scan's lock alive. The file itself stays (a lock
file that is removed while another process waits on it would let two writers in). It records the holder,
for the message a second scan gets. Being per process, the lock does not exclude a second scan started
from the same Python process.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json

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

    """

    def __init__(self, manifest: str | Path) -> None:
        out = Path(manifest)
        self.path = out.with_name(f"{out.name}.lock")
        self._descriptor: int | None = None

    def __enter__(self) -> ManifestLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InputError(f"cannot create the lock file {self.path} ({error.strerror}); check that the folder "
                             "exists and is writable") from error
        if fcntl is not None:
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:  # EACCES or EAGAIN: another process holds it
                holder = _holder(descriptor)
                os.close(descriptor)
                raise InputError(f"manifest {self.path.with_suffix('')} is being written by another scan ({holder}); "
                                 "wait for it to finish, or choose another --out") from error
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._descriptor = descriptor
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the lock
            self._descriptor = None


def _holder(descriptor: int) -> str:
    try:
        info = parse_json(os.pread(descriptor, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
