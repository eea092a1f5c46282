"""The two limits every remote read keeps: an overall deadline, and a size cap applied while the bytes stream.

A server can hold a read for ever without going idle (one byte every 20 s defeats any idle timeout), and
can send an answer of any size without stating it (no Content-Length). So:

- Each remote read (a listing, one object, a shard's member index, one member) has a :class:`Deadline`:
  the whole operation, retries included, ends within ``$OODFILTER_REMOTE_DEADLINE`` seconds (default
  300). Calls on fsspec's asynchronous file systems (http, s3, gcs, ...) are cancelled when it passes
  (:func:`within`); HTTP requests also carry it as aiohttp's total timeout.
- HTTP answers are read through :func:`capped_response_class`: a body stated or found to be larger than
  ``$OODFILTER_REMOTE_MAX_BYTES`` (default 256 MiB) stops being read at that many bytes plus one chunk, and
  a server that ignores a byte-range request is caught before it can send a whole object instead.

Both knobs are read when a read starts, so a test (or a user with a slow link) can change them.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from typing import Any

from oodfilter.errors import InputError
from oodfilter.messages import redact

DEADLINE_ENV = "OODFILTER_REMOTE_DEADLINE"
MAX_BYTES_ENV = "OODFILTER_REMOTE_MAX_BYTES"
DEFAULT_DEADLINE = 300.0  # seconds for one remote read, start to last byte
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # an image (or listing page) this large is a mistake or an attack
_CHUNK = 64 * 1024  # bytes read from an HTTP body at a time: the most a read can pass the cap by
_RANGE = re.compile(r"^\s*bytes=(\d+)-(\d+)\s*$")


class RemoteDeadlineError(TimeoutError):
    """A remote read did not finish within its deadline (an outage: the scan stops, ``--resume`` continues)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g} s (the limit ${DEADLINE_ENV} sets; raise it for a "
                         "slow link or a very large listing)")
        self.seconds = seconds


class ResponseTooLargeError(InputError):
    """An HTTP answer larger than the size cap; ``reason`` says so without the URL."""

    def __init__(self, url: str, max_bytes: int, stated: int | None = None) -> None:
        size = f"{stated} bytes, " if stated is not None else ""
        self.reason = f"{size}larger than the limit of {max_bytes} bytes (${MAX_BYTES_ENV}); not read"
        super().__init__(f"{redact(url)}: {self.reason}")
        self.url = url


def remote_deadline() -> float:
    """Return the seconds one remote read may take (``$OODFILTER_REMOTE_DEADLINE``, default 300).

    Raises:
        InputError: the variable is set to something other than a positive number.

    """
    return _positive(DEADLINE_ENV, DEFAULT_DEADLINE, float)


def max_remote_bytes() -> int:
    """Return the most bytes one remote answer may hold (``$OODFILTER_REMOTE_MAX_BYTES``, default 256 MiB).

    Raises:
        InputError: the variable is set to something other than a positive whole number.

    """
    return int(_positive(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, int))


def _positive(name: str, default: float, kind: type) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise InputError(f"${name} must be a positive {'whole number' if kind is int else 'number'}, got "
                         f"{text[:40]!r}; unset it for the default ({default:g})")
    return float(value)


class Deadline:
    """The end of the time one remote read may take, counted from its creation."""

    def __init__(self, seconds: float | None = None) -> None:
        """Start the clock: ``seconds`` from now (default: :func:`remote_deadline`)."""
        self.seconds = remote_deadline() if seconds is None else seconds
        self._ends = time.monotonic() + self.seconds

    def left(self) -> float:
        """Return the seconds left (zero or less once it has passed)."""
        return self._ends - time.monotonic()

    def remaining(self) -> float:
        """Return the seconds left.

        Raises:
            RemoteDeadlineError: none are left.

        """
        left = self.left()
        if left <= 0:
            raise RemoteDeadlineError(self.seconds)
        return left


def within(fs: Any, method: str, *args: Any, deadline: Deadline, **kwargs: Any) -> Any:
    """Return ``fs.<method>(*args, **kwargs)``, cancelled when ``deadline`` passes.

    fsspec's asynchronous file systems take the time left as their ``timeout``; a synchronous one (a
    ``memory://`` store, a plugin) keeps its own timeouts and is checked when it returns.

    Raises:
        RemoteDeadlineError: the deadline passed (before or during the call).

    """
    function = getattr(fs, method)
    if not getattr(fs, "async_impl", False):
        deadline.remaining()
        result = function(*args, **kwargs)
        deadline.remaining()
        return result
    from fsspec.exceptions import FSTimeoutError

    try:
        return function(*args, timeout=deadline.remaining(), **kwargs)
    except FSTimeoutError:
        deadline.remaining()  # raises when it was the deadline
        raise  # another timeout (connecting, an idle socket): an outage like any other


def http_client_options(max_bytes: int, deadline: float, idle: float) -> dict[str, Any]:
    """Return aiohttp ClientSession options for fsspec's HTTP file system: timeouts and the size cap.

    Args:
        max_bytes: The size cap of every answer's body.
        deadline: aiohttp's total timeout: connect, send, and read the whole answer.
        idle: The connect and between-bytes timeouts.

    """
    import aiohttp

    return {"timeout": aiohttp.ClientTimeout(total=deadline, sock_connect=idle, sock_read=idle),
            "response_class": capped_response_class(max_bytes)}


@functools.lru_cache(maxsize=8)
def capped_response_class(max_bytes: int) -> type:
    """Return an aiohttp response class whose body is read with :func:`read_capped` (one class per cap).

    One class per cap, with the cap in its name, so fsspec's cache of file systems (keyed by their options)
    keeps file systems of different caps apart.
    """
    import aiohttp

    class CappedResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            """Read the body within the cap; the rest is aiohttp's (tracing, releasing the connection)."""
            if self._body is None:
                try:
                    self._body = await read_capped(self, max_bytes)
                except BaseException:
                    self.close()
                    raise
            return await super().read()

    CappedResponse.__name__ = CappedResponse.__qualname__ = f"CappedResponse{max_bytes}"
    return CappedResponse


async def read_capped(response: Any, max_bytes: int) -> bytes:
    """Return an aiohttp response's body, read chunk by chunk and never past ``max_bytes`` plus one chunk.

    A body that states (Content-Length) or turns out to be larger is refused. So is an answer to a
    byte-range request that ignored the range: a range past the start is refused at once, one from the
    start may bring at most the bytes asked for.

    Raises:
        ResponseTooLargeError: more than ``max_bytes``.
        ValueError: the server did not honour a byte-range request (the message says "range").

    """
    wanted = _requested_length(response)
    limit = max_bytes if wanted is None else min(max_bytes, wanted)
    url = str(response.url)
    stated = response.content_length
    if stated is not None and stated > limit:
        raise _refusal(url, max_bytes, wanted, stated)
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise _refusal(url, max_bytes, wanted, None)
    return bytes(body)


def _requested_length(response: Any) -> int | None:
    """Return how many bytes a byte-range request asked for, when the server answered with the whole object.

    Raises:
        ValueError: it asked for a range that does not start at 0 and got the whole object (status 200).

    """
    if response.status != 200:
        return None
    match = _RANGE.match(response.request_info.headers.get("Range", ""))
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    if start > 0:
        raise ValueError(f"{redact(str(response.url))}: the server ignored a byte-range request (range requests "
                         "are not honoured)")
    return end - start + 1


def _refusal(url: str, max_bytes: int, wanted: int | None, stated: int | None) -> Exception:
    if wanted is not None and wanted < max_bytes:
        return ValueError(f"{redact(url)}: the server sent more than the byte range asked for (range requests are "
                          "not honoured)")
    return ResponseTooLargeError(url, max_bytes, stated)
