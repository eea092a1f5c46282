"""A remote object read as a seekable file, by byte-range requests that each keep the remote limits.

Reading a shard's member index walks its tar headers: seek, read 512 bytes, seek past the member. Wrapped in
an ``io.BufferedReader``, each block of this file is one ``cat_file`` range request, made within a
:class:`~oodfilter.data.remote_limits.Deadline` (one for the whole index, or a fresh one per request for a
long sequential copy) and never asking for more than the size cap.
"""

from __future__ import annotations

import io
from typing import Any

from oodfilter.data.remote_limits import Deadline, max_remote_bytes, within
from oodfilter.errors import InputError
from oodfilter.messages import redact

BLOCK_BYTES = 8 * 1024 * 1024  # one range request: a shard's headers are read ahead in blocks this large


class RangeFile(io.RawIOBase):
    """A remote object as a read-only, seekable raw file.

    Args:
        fs: The fsspec file system.
        path: The object's path in it.
        name: The object's URL, for messages.
        deadline: The deadline of every request, or None for a fresh deadline per request.

    Raises:
        InputError: the store does not say how large the object is (byte ranges need it).
        RemoteDeadlineError: asking for its size took too long.

    """

    def __init__(self, fs: Any, path: str, name: str, deadline: Deadline | None = None) -> None:
        super().__init__()
        self._fs, self._path, self._name, self._deadline = fs, path, name, deadline
        self._most = max_remote_bytes()
        size = within(fs, "size", path, deadline=self._current())
        if not isinstance(size, int):
            raise InputError(f"{redact(name)}: its server does not say how large it is, which reading it by byte "
                             "ranges needs; copy it to local disk or an object store")
        self._size = size
        self._position = 0

    def _current(self) -> Deadline:
        return self._deadline if self._deadline is not None else Deadline()

    def readable(self) -> bool:
        """Return True: the file is read."""
        return True

    def seekable(self) -> bool:
        """Return True: reads start anywhere."""
        return True

    def tell(self) -> int:
        """Return the position of the next read."""
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` from the start, the current position or the end; return the new position."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"cannot seek to {base + offset}, before the start of {redact(self._name)}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position with one range request; return the bytes read (0 at the end).

        Raises:
            ValueError: the server sent more than the range asked for (it does not honour byte ranges).
            RemoteDeadlineError: the request did not finish in time.

        """
        view = memoryview(buffer).cast("B")
        end = min(self._size, self._position + len(view), self._position + self._most)
        if end <= self._position:
            return 0
        data = within(self._fs, "cat_file", self._path, start=self._position, end=end, deadline=self._current())
        if len(data) > end - self._position:
            raise ValueError(f"{redact(self._name)}: the server sent more than the byte range asked for (range "
                             "requests are not honoured)")
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


def open_ranges(fs: Any, path: str, name: str, deadline: Deadline | None = None) -> io.BufferedReader:
    """Return the remote object ``path`` of ``fs`` as a buffered, seekable binary file (see :class:`RangeFile`)."""
    return io.BufferedReader(RangeFile(fs, path, name, deadline), buffer_size=BLOCK_BYTES)
