"""Images behind URLs (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``memory://``, ...), read through fsspec.

fsspec gives one interface to every object store and protocol, with its usual credential mechanisms
(``AWS_*`` and ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``HF_TOKEN``, fsspec's
``FSSPEC_<PROTOCOL>_<OPTION>`` variables and config files), so credentials never appear in a URL, a
manifest or a log: a URL that carries a password is refused.

A missing object or a refused one is that image's error row, as for a local file. A server that cannot be
reached (after a few tries) stops the scan with :class:`SourceUnavailableError`: the rows scanned so far
are in the manifest and ``--resume`` continues once the server is back, instead of a run of error rows
that a resume would not retry.

Every read keeps the limits of :mod:`oodfilter.data.remote_limits`: an overall deadline (retries included)
and a size cap applied while the bytes stream. Messages name URLs with their signatures redacted
(:func:`oodfilter.messages.redact`); manifests keep the URL as given, since it names the input.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from oodfilter.data.remote_limits import (
    Deadline,
    RemoteDeadlineError,
    ResponseTooLargeError,
    http_client_options,
    max_remote_bytes,
    within,
)
from oodfilter.errors import InputError
from oodfilter.messages import redact

URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_RETRY_DELAYS = (0.5, 1.5)  # seconds before the second and third try of an unreachable server
HTTP_TIMEOUT = 60.0  # seconds to connect, and between bytes of an answer (the deadline bounds the whole)
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class SourceUnavailableError(InputError):
    """A server or object store stopped answering; the scan stops and ``--resume`` continues it later."""


class RemoteReadError(InputError):
    """One remote object cannot be read (missing, refused, too large): its error row, not a stopped scan."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{redact(url)}: {reason}")
        self.url = url
        self.reason = reason


def is_url(text: str) -> bool:
    """Return whether ``text`` names a remote object (an fsspec URL other than ``file://``)."""
    return bool(URL_PATTERN.match(text)) and not text.lower().startswith("file://")


def check_url(url: str) -> None:
    """Refuse a URL that carries credentials, which would end up in manifests and logs.

    Raises:
        InputError: the URL has a user part (``scheme://user:password@host/...``, ``https://TOKEN@host/...``).

    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise InputError(f"{redact(_redacted(url))} carries credentials; pass them through the environment or "
                         "fsspec's configuration (e.g. AWS_ACCESS_KEY_ID, HF_TOKEN), never in the URL")


def filesystem(url: str, *, max_bytes: int | None = None) -> tuple[Any, str]:
    """Return (fsspec filesystem, path within it) for ``url``; every remote read goes through here.

    HTTP(S) gets connect and idle timeouts, the deadline as its total timeout, and answers whose bodies are
    read within ``max_bytes`` (default :func:`~oodfilter.data.remote_limits.max_remote_bytes`).

    Raises:
        InputError: a URL with credentials in it, a protocol fsspec does not know, or its package missing; a
            bad ``$OODFILTER_REMOTE_DEADLINE`` or ``$OODFILTER_REMOTE_MAX_BYTES``.

    """
    import fsspec

    check_url(url)
    limit = max_remote_bytes() if max_bytes is None else max_bytes
    deadline = Deadline().seconds  # checks the setting before anything is read
    options: dict[str, Any] = {}
    if url.lower().startswith(("http://", "https://")):
        try:
            import aiohttp  # noqa: F401 (fsspec's HTTP file system needs it)
        except ImportError as error:
            raise InputError(f"cannot read {redact(url)}: fsspec reads http(s) URLs with aiohttp, which is not "
                             "installed (pip install 'oodfilter[remote]')") from error
        options["client_kwargs"] = http_client_options(limit, deadline, HTTP_TIMEOUT)
    try:
        return fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as error:
        protocol = url.split("://", 1)[0]
        raise InputError(f"cannot read {redact(url)}: {redact(str(error))}; install the fsspec implementation of "
                         f"'{protocol}://' (pip install 'oodfilter[remote]' covers s3, gs and http)") from error


def read_bytes(url: str, *, max_bytes: int | None = None) -> bytes:
    """Return the bytes of the object at ``url``, within the deadline (all tries together) and the size cap.

    Args:
        url: The object.
        max_bytes: The size cap (default :func:`~oodfilter.data.remote_limits.max_remote_bytes`); a larger
            object is refused before or while it streams, whether its size is stated or not.

    Raises:
        RemoteReadError: the object does not exist, is refused, is a folder, or is larger than ``max_bytes``.
        SourceUnavailableError: the server did not answer in three tries, or not in full before the deadline.

    """
    limit = max_remote_bytes() if max_bytes is None else max_bytes
    fs, path = filesystem(url, max_bytes=limit)
    deadline = Deadline()
    for attempt in range(len(_RETRY_DELAYS) + 1):
        try:
            size = _known_size(fs, path, deadline)
            if size is not None and size > limit:
                raise RemoteReadError(url, f"{size} bytes, over the limit of {limit}; not read")
            data = within(fs, "cat_file", path, deadline=deadline, **_first_bytes(url, limit))
        except RemoteReadError:
            raise
        except ResponseTooLargeError as error:
            raise RemoteReadError(url, error.reason) from error
        except RemoteDeadlineError as error:
            raise unavailable(url, error) from error
        except _PERMANENT as error:
            if not is_outage(error):
                raise RemoteReadError(url, _permanent_reason(error)) from error
            failure: Exception = error
        except Exception as error:  # every backend has its own connection errors; all mean "try again"
            failure = error
        else:
            if len(data) > limit:
                raise RemoteReadError(url, f"larger than the limit of {limit} bytes; not read")
            return bytes(data)
        if _is_credentials_error(failure):
            raise InputError(f"{redact(url)}: {redact(str(failure))}; set the store's credentials in the environment "
                             "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, "
                             "HF_TOKEN) or fsspec's configuration") from failure
        if attempt == len(_RETRY_DELAYS) or deadline.left() <= _RETRY_DELAYS[attempt]:  # no time for another try
            raise unavailable(url, failure)
        fs.invalidate_cache()
        time.sleep(_RETRY_DELAYS[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


def unavailable(url: str, error: BaseException) -> SourceUnavailableError:
    """Return the error that stops a scan because ``url``'s server did not answer (in full, in time)."""
    cause = _root_cause(error)
    deadline = next((e for e in _chain(error) if isinstance(e, RemoteDeadlineError)), None)
    why = f"in full: {deadline}" if deadline is not None else f"({type(cause).__name__}: {redact(str(cause))})"
    return SourceUnavailableError(
        f"{redact(url)}: the server did not answer {why}; the rows scanned so far are in the manifest: run the same "
        "command with --resume once it is reachable")


def is_outage(error: BaseException) -> bool:
    """Whether a "not found" from fsspec hides a server that did not answer (HTTP wraps every failure in it).

    fsspec's HTTP file system raises FileNotFoundError from whatever went wrong: a real 404 (or 401/403/410)
    is the object's error row; a refused connection, a timeout, a 5xx or a 429 is an outage.
    """
    cause = _root_cause(error)
    if cause is error and isinstance(error, FileNotFoundError):
        return False
    if isinstance(cause, FileNotFoundError | PermissionError):
        return False
    status = getattr(cause, "status", None)
    if isinstance(status, int):
        return status >= 500 or status == 429
    return True


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    return chain


def _known_size(fs: Any, path: str, deadline: Deadline) -> int | None:
    """Return the object's size when the store says it without reading it (None when it cannot)."""
    try:
        size = within(fs, "size", path, deadline=deadline)
    except RemoteDeadlineError:
        raise
    except Exception:  # the read that follows reports what is wrong
        return None
    return int(size) if isinstance(size, int) else None


def _first_bytes(url: str, limit: int) -> dict[str, int]:
    """Return ``cat_file``'s range for a capped read: the first ``limit + 1`` bytes (HTTP: none, see below).

    An HTTP body is capped while it streams (:func:`~oodfilter.data.remote_limits.read_capped`), so HTTP
    reads ask for the whole object: a server that mishandles byte ranges cannot make it a different one.
    """
    return {} if url.lower().startswith(("http://", "https://")) else {"start": 0, "end": limit + 1}


def _is_credentials_error(error: BaseException) -> bool:
    """Whether ``error`` says credentials are missing or wrong (boto's NoCredentialsError, ...): no retry helps."""
    return "credential" in type(error).__name__.lower()


def _permanent_reason(error: OSError) -> str:
    status = getattr(_root_cause(error), "status", None)
    if isinstance(status, int) and status != 404:
        return f"refused by its server (HTTP {status})"
    if isinstance(error, FileNotFoundError):
        return "not found at its server"
    if isinstance(error, PermissionError):
        return "access denied by its server (check the credentials in the environment)"
    return "is a folder, not an image"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts._replace(netloc=f"***@{host}" + (f":{parts.port}" if parts.port else "")).geturl()
