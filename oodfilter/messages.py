"""What a message may quote of a user's values: bounded excerpts, and URLs without their signatures.

An error message that echoes a value from a file (a YAML option, a manifest cell, a JSON key) quotes an
:func:`excerpt`: a repr of bounded length, built without expanding the whole value (a 400-byte YAML alias
bomb is hundreds of megabytes once written out in full). A message that names a URL goes through
:func:`redact`: the query values that grant access (a presigned URL's ``X-Amz-Signature``, ``Signature``,
``sig``, ``X-Goog-Signature``, session tokens, API keys) become ``REDACTED``, so a message can be pasted into
an issue or a log. Manifests keep the URL as given: it names the input, and resume and report read it.
"""

from __future__ import annotations

import re
import reprlib

EXCERPT_CHARS = 200
REDACTED = "REDACTED"

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlong = 40
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_repr, _name, 6)

# A query parameter whose value grants access: its name, and its value up to the next separator.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;](?:sig|key|auth|code|[A-Za-z0-9_.-]*(?:signature|token|credential|secret|password|passwd"
    r"|api[_-]?key|access[_-]?key[A-Za-z0-9_-]*))=)(?P<value>[^&;#\s'\"<>]*)",
    re.IGNORECASE,
)


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """Return a repr of ``value`` of at most ``limit`` characters (deep or long values shown in part).

    The repr is built piece by piece with bounded depth and length, never in full first, so quoting a
    huge or self-repeating value costs little memory and time.
    """
    try:
        text = _repr.repr(value)
    except Exception:  # a user object whose repr fails: its type is still worth naming
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def redact(text: str) -> str:
    """Return ``text`` with the values of access-granting URL query parameters replaced by ``REDACTED``."""
    return _SECRET_PARAMETER.sub(lambda match: match["name"] + (REDACTED if match["value"] else ""), text)
