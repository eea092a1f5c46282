r"""File names that are not valid UTF-8: how they are kept, stored and shown.

On Linux a file name is bytes, and not every name is UTF-8 (an old camera's or archive's Latin-1 name).
Python names such a file with one lone surrogate (U+DC80-U+DCFF) per byte that does not decode (PEP 383,
``surrogateescape``), and that ``str`` is what oodfilter keeps in memory: it opens, moves, compares and
resumes like any other name. Each store keeps the name's exact bytes, in the way natural to its format:

- JSONL manifests and journals: JSON's own escape (``"\udcff"``), so the file stays ASCII and is read back
  by any JSON reader that keeps lone surrogates (Python's does);
- CSV manifests: the name's own bytes (the file is UTF-8 except where a name is not, as ``ls`` prints it);
- Parquet manifests and clip-retrieval metadata: a column that holds such a name is stored as ``binary``
  (the bytes); every other column, and every file without such names, keeps its ``string`` type.

The bytes are UTF-8 with ``surrogateescape`` on every platform (the same as ``os.fsencode`` on Linux and
macOS), so a manifest means the same everywhere. A reversible text escape was not chosen: any escape is
itself a valid name (``a\xff.png`` can be a real file), so it would change the meaning of some real names.
Messages and the report show each undecodable byte as ``\xNN`` (:func:`printable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ENCODING = "utf-8"
ERRORS = "surrogateescape"


def is_storable(text: str) -> bool:
    """Whether ``text`` is a name some bytes decode to (lone surrogates only for undecodable bytes)."""
    try:
        text.encode(ENCODING, ERRORS)
    except UnicodeEncodeError:
        return False
    return True


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (encodes as UTF-8 without escapes)."""
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def name_bytes(text: str) -> bytes:
    """Return the bytes of a name (raises ``UnicodeEncodeError`` for text no bytes decode to)."""
    return text.encode(ENCODING, ERRORS)


def name_text(data: bytes) -> str:
    """Return the name that the bytes ``data`` are (every byte sequence has one)."""
    return data.decode(ENCODING, ERRORS)


def printable(text: str) -> str:
    r"""Return ``text`` as valid Unicode for people: each undecodable byte of a name shown as ``\xNN``."""
    try:
        return name_bytes(text).decode(ENCODING, "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no name decodes to
        return text.encode(ENCODING, "backslashreplace").decode(ENCODING)


def arrow_text_column(pa: Any, values: Sequence[str | None]) -> Any:
    """Return an Arrow array of ``values``: ``string``, or ``binary`` (the names' bytes) when one is not Unicode."""
    if all(value is None or is_unicode(value) for value in values):
        return pa.array(values, type=pa.string())
    return pa.array([None if value is None else name_bytes(value) for value in values], type=pa.binary())


def from_arrow_value(value: Any) -> Any:
    """Turn a value read from a ``binary`` text column back into its name; other values pass unchanged."""
    return name_text(bytes(value)) if isinstance(value, bytes | bytearray) else value
