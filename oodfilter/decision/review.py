"""Review files: a person's "keep" and "drop" marks (and slider threshold) on a scan, exported by the report.

The format (``oodfilter-review/1``), JSON::

    {"format": "oodfilter-review/1",
     "manifest": "<absolute path of the manifest the report was made from>",
     "manifest_sha256": "<sha256 of that manifest's bytes when the report was made>",
     "threshold": <the slider's threshold if the reviewer moved it, else null>,
     "marks": {"<row path exactly as in the manifest>": "keep" | "drop", ...}}

A review file comes from a browser download and is read as untrusted: every field is checked before
use, and it is refused when the manifest changed since the report was made (its digest differs) or when
a mark names a path the manifest has no row for. Other keys are ignored (later versions may add some).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json
from oodfilter.messages import excerpt
from oodfilter.model.file_digest import file_sha256
from oodfilter.sinks.names import is_storable, printable

REVIEW_FORMAT = "oodfilter-review/1"
MARKS = ("keep", "drop")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Review:
    """A validated review file.

    Attributes:
        path: The review file.
        sha256: The digest of the review file's bytes (recorded in the applied manifest's meta).
        manifest: The manifest path the report was made from, as the file names it.
        manifest_sha256: The digest that manifest had then (lower case).
        threshold: The slider's threshold, or None when the reviewer did not move it.
        marks: Row path → ``"keep"`` or ``"drop"``.

    """

    path: Path
    sha256: str
    manifest: str
    manifest_sha256: str
    threshold: float | None
    marks: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Return how many marks say keep and how many say drop."""
        return {mark: sum(value == mark for value in self.marks.values()) for mark in MARKS}


def load_review(path: str | Path) -> Review:
    """Read and validate a review file's format and values (not yet against a manifest: see :func:`check_review`).

    Raises:
        InputError: the file is missing or unreadable, not JSON, of another format, or a field is missing or
            holds a value of the wrong type (the message names the file and the field).

    """
    where = f"review file {path}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{where} does not exist; export it from the report page (oodfilter report)") from None
    except OSError as error:
        raise InputError(f"{where} cannot be read: {error}") from None
    try:
        record = parse_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{where} is not valid JSON ({error}); export it again from the report page") from None
    if not isinstance(record, dict) or record.get("format") != REVIEW_FORMAT:
        raise InputError(f"{where} is not an oodfilter review file (expected \"format\": \"{REVIEW_FORMAT}\")")
    manifest = record.get("manifest")
    if not isinstance(manifest, str) or not manifest or "\0" in manifest:
        raise InputError(f"{where}: 'manifest' must be the path of the manifest the report was made from")
    digest = record.get("manifest_sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise InputError(f"{where}: 'manifest_sha256' must be the 64 hex digits of the manifest's sha256")
    if "marks" not in record:  # a file cut short or made by another tool, not a review with no marks
        raise InputError(f"{where}: 'marks' is missing; a review file always has it (an empty object when nothing "
                         "is marked): export it again from the report page")
    return Review(Path(path), _sha256_of(data), manifest, digest.lower(), _threshold(record.get("threshold"), where),
                  _marks(record["marks"], where))


def check_review(review: Review, manifest: str | Path, paths: set[str]) -> None:
    """Refuse ``review`` for ``manifest`` when the manifest changed since the review, or a mark names no row.

    Args:
        review: The review file, read by :func:`load_review`.
        manifest: The manifest the review is applied to.
        paths: The manifest's row paths.

    Raises:
        InputError: the manifest's sha256 is not the one the review was made on, or a mark names a path
            the manifest has no row for (the first is named).

    """
    actual = file_sha256(manifest)
    if actual != review.manifest_sha256:
        raise InputError(f"review file {review.path} was made on another version of {manifest} (its sha256 was "
                         f"{review.manifest_sha256[:12]}..., now {actual[:12]}...): the manifest changed since the "
                         "report was made; make the report again and review it, or apply the review to the "
                         "manifest it was made on")
    unknown = sorted(path for path in review.marks if path not in paths)
    if unknown:
        raise InputError(f"review file {review.path} marks {printable(unknown[0])!r}, which {manifest} has no row "
                         f"for ({len(unknown)} such mark(s)); the review belongs to another manifest, or the "
                         "file was edited")


def _sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _threshold(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: 'threshold' holds {excerpt(value)}; expected a number or null")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"{where}: 'threshold' is not a finite number")
    return number


def _marks(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InputError(f"{where}: 'marks' must map row paths to \"keep\" or \"drop\" (an empty object when "
                         "nothing is marked)")
    for path, mark in value.items():
        if not path or not is_storable(path):
            raise InputError(f"{where}: 'marks' holds the key {excerpt(path)}, which is no row path")
        if mark not in MARKS:
            raise InputError(f"{where}: the mark of {printable(path)!r} is {excerpt(mark)}; expected \"keep\" or "
                             "\"drop\"")
    return dict(value)
