"""How the integrity of a catalogue checkpoint is decided: a published sha256, else trust on first use.

The checkpoint's sha256 is what is trusted:

1. If the catalogue publishes a sha256 (and size) for the entry, a file must match it.
2. Otherwise the first file that passes every check (size if published, not a web page, a PyTorch
   checkpoint that ``torch.load(weights_only=True)`` reads and whose every key matches the architecture)
   is trusted, and its sha256 and size are recorded in ``<cache>/models/<name>/checkpoint.json``. Any
   later file for that entry (a re-download, or a bundle converted by hand from another file) must have
   the same sha256, or it is refused. To accept a new file on purpose, delete ``checkpoint.json``.

Bundles record the sha256 of the checkpoint they were converted from (``oodfilter.json``, ``source``), so
a cached bundle is checked against the same record before it loads, and its own files against its
manifest (:func:`oodfilter.model.bundle.load_bundle`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from oodfilter.atomic import atomic_write_text
from oodfilter.errors import CheckpointError
from oodfilter.json_parse import parse_json
from oodfilter.model.catalogue import CatalogueEntry

TRUST_RECORD = "checkpoint.json"


@dataclass(frozen=True)
class TrustRecord:
    """What was trusted on first use.

    Attributes:
        name: The catalogue entry.
        url: Where the file came from (``by hand`` for a bundle converted by hand).
        file: The checkpoint's file name.
        size: Its size in bytes (None when only a hand-converted bundle was seen).
        sha256: Its sha256.
        recorded: When it was first trusted (UTC, ISO 8601).

    """

    name: str
    url: str
    file: str
    size: int | None
    sha256: str
    recorded: str


def read_trust_record(folder: Path) -> TrustRecord | None:
    """Return the record in ``folder/checkpoint.json``, or None when there is none.

    Raises:
        CheckpointError: the record exists but is unreadable or malformed.

    """
    path = folder / TRUST_RECORD
    if not path.is_file():
        return None
    try:
        return TrustRecord(**parse_json(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"{path} is unreadable or malformed ({error}); delete it to trust the next verified download"
        ) from error


def write_trust_record(entry: CatalogueEntry, folder: Path, *, url: str, sha256: str, size: int | None) -> TrustRecord:
    """Record ``sha256`` as the trusted checkpoint of ``entry`` (atomically) and return the record."""
    record = TrustRecord(name=entry.name, url=url, file=entry.file, size=size, sha256=sha256,
                         recorded=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(folder / TRUST_RECORD, json.dumps(asdict(record), indent=2))
    return record


def expected_sha256(entry: CatalogueEntry, folder: Path) -> tuple[str | None, str]:
    """Return the sha256 a checkpoint of ``entry`` must have (None: nothing trusted yet) and its source."""
    if entry.sha256 is not None:
        return entry.sha256, "the catalogue"
    record = read_trust_record(folder)
    if record is None:
        return None, "nothing yet (trust on first use)"
    return record.sha256, f"{folder / TRUST_RECORD}, recorded on first use on {record.recorded}"


def check_trusted(entry: CatalogueEntry, folder: Path, sha256: str, what: str) -> None:
    """Refuse ``what`` (a downloaded file or a cached bundle's origin) unless its sha256 is the trusted one.

    Raises:
        CheckpointError: a sha256 is trusted for ``entry`` and ``sha256`` differs from it.

    """
    expected, source = expected_sha256(entry, folder)
    if expected is None or expected == sha256:
        return
    advice = (f"delete {folder / TRUST_RECORD} if you trust the new file" if entry.sha256 is None
              else "the catalogue's hash is fixed: report it if the publisher changed the file")
    raise CheckpointError(
        f"{what} has sha256 {sha256}, but {entry.name} is pinned to {expected} (from {source}); it was refused. "
        f"The published file changed or the copy is not the original; {advice}."
    )
