"""Images behind URLs (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``memory://``, ...), read through fsspec.

fsspec gives one interface to every object store and protocol, with its usual credential mechanisms
(``AWS_*`` and ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``HF_TOKEN``, fsspec's
``FSSPEC_<PROTOCOL>_<OPTION>`` variables and config files), so credentials never appear in a URL, a
manifest or a log: a URL that carries a password is refused.

A missing object or a refused one is that image's error row, as for a local file. A server that cannot be
reached (after a few tries) stops the scan with :class:`SourceUnavailableError`: the rows scanned so far
are in the manifest and ``--resume`` continues once the server is back, instead of a run of error rows
that a resume would not retry.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from oodfilter.errors import InputError

URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Larger objects are refused before they are read: an image file this large is a mistake or an attack.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_RETRY_DELAYS = (0.5, 1.5)  # seconds before the second and third try of an unreachable server
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class SourceUnavailableError(InputError):
    """A server or object store stopped answering; the scan stops and ``--resume`` continues it later."""


class RemoteReadError(InputError):
    """One remote object cannot be read (missing, refused, too large): its error row, not a stopped scan."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def is_url(text: str) -> bool:
    """Return whether ``text`` names a remote object (an fsspec URL other than ``file://``)."""
    return bool(URL_PATTERN.match(text)) and not text.lower().startswith("file://")


def check_url(url: str) -> None:
    """Refuse a URL that carries credentials, which would end up in manifests and logs.

    Raises:
        InputError: the URL has a password (``scheme://user:password@host/...``).

    """
    if urlsplit(url).password is not None:
        raise InputError(f"{_redacted(url)} carries a password; pass credentials through the environment or "
                         "fsspec's configuration (e.g. AWS_ACCESS_KEY_ID, HF_TOKEN), never in the URL")


def filesystem(url: str) -> tuple[Any, str]:
    """Return (fsspec filesystem, path within it) for ``url``.

    Raises:
        InputError: fsspec does not know the protocol, or the package that implements it is missing.

    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        protocol = url.split("://", 1)[0]
        raise InputError(f"cannot read {url}: {error}; install the fsspec implementation of '{protocol}://' "
                         "(pip install 'oodfilter[remote]' covers s3, gs and http)") from error


def read_bytes(url: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Return the bytes of the object at ``url``.

    Raises:
        RemoteReadError: the object does not exist, is refused, is a folder, or is larger than ``max_bytes``.
        SourceUnavailableError: the server did not answer in three tries.

    """
    fs, path = filesystem(url)
    for attempt in range(len(_RETRY_DELAYS) + 1):
        try:
            with fs.open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except _PERMANENT as error:
            raise RemoteReadError(url, _permanent_reason(error)) from error
        except Exception as error:  # every backend has its own connection errors; all mean "try again"
            if _is_credentials_error(error):
                raise InputError(f"{url}: {error}; set the store's credentials in the environment (e.g. "
                                 "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, "
                                 "HF_TOKEN) or fsspec's configuration") from error
            if attempt == len(_RETRY_DELAYS):
                raise SourceUnavailableError(
                    f"{url}: the server did not answer ({type(error).__name__}: {error}); the rows scanned so far "
                    "are in the manifest: run the same command with --resume once it is reachable") from error
            fs.invalidate_cache()
            time.sleep(_RETRY_DELAYS[attempt])
            continue
        if len(data) > max_bytes:
            raise RemoteReadError(url, f"larger than the limit of {max_bytes} bytes; not read")
        return bytes(data)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_credentials_error(error: BaseException) -> bool:
    """Whether ``error`` says credentials are missing or wrong (boto's NoCredentialsError, ...): no retry helps."""
    return "credential" in type(error).__name__.lower()


def _permanent_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "not found at its server"
    if isinstance(error, PermissionError):
        return "access denied by its server (check the credentials in the environment)"
    return "is a folder, not an image"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts._replace(netloc=f"***@{host}" + (f":{parts.port}" if parts.port else "")).geturl()
