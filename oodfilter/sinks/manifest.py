"""Scan manifests: one row per input, written incrementally, readable after a crash.

Formats by suffix: ``.jsonl`` (default), ``.csv``, ``.parquet`` (needs the ``parquet`` extra). JSONL and
CSV are appended and flushed batch by batch; a line cut short by a crash is dropped when the manifest is
reopened. Parquet cannot be appended safely, so its rows go to ``<out>.partial.jsonl`` while the scan runs
and are written to the Parquet file (atomically) when it finishes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from oodfilter.atomic import atomic_write
from oodfilter.errors import InputError, MissingDependencyError
from oodfilter.finite import is_finite
from oodfilter.json_parse import parse_json
from oodfilter.outputs import os_error
from oodfilter.sinks.rows import COLUMNS, ManifestRow, row_from_record

FORMATS = (".jsonl", ".csv", ".parquet")


def manifest_format(path: str | Path) -> str:
    """Return the manifest format of ``path`` from its suffix.

    Raises:
        InputError: an unknown suffix.

    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"manifest {path}: unknown format '{suffix}'; use .jsonl, .csv or .parquet")
    return suffix


def sidecar(path: str | Path, name: str) -> Path:
    """Return the path of a file kept beside the manifest (``<out>.<name>``)."""
    out = Path(path)
    return out.with_name(f"{out.name}.{name}")


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read and validate every complete row of a manifest (and, for Parquet, of its partial journal).

    Raises:
        InputError: an unknown format, or a record that is not a valid row (the message names the file,
            the line and the column).

    """
    return list(iter_manifest(path))


def iter_manifest(path: str | Path) -> Iterator[ManifestRow]:
    """Yield every complete row of a manifest, validated, in file order, holding one record at a time.

    JSONL manifests are read line by line and Parquet ones batch by batch, so memory does not grow with
    the manifest; a CSV manifest is parsed whole first (a record torn by a crash can only be told by
    reading to its end). Raises as :func:`read_manifest`, when the bad record is reached.
    """
    out = Path(path)
    fmt = manifest_format(out)
    if fmt == ".parquet":
        if out.is_file():
            yield from _iter_parquet(out)
        yield from _iter_jsonl(sidecar(out, "partial.jsonl"))
    elif out.is_file():
        yield from _iter_jsonl(out) if fmt == ".jsonl" else _read_csv(out)


# Keys of <manifest>.meta.json and the types a reader relies on (other keys are kept, unchecked).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "threshold": (float, int, type(None)), "fingerprints": (dict,), "classes_sha256": (str,),
    "cwd": (str,), "decision": (str, type(None)), "model": (str,), "num_classes": (int,),
    "templates": (str, list), "decision_rule": (dict, type(None)), "calibration": (dict, type(None)),
    "keep_fraction": (float, int, type(None)), "keep_boundary": (float, int, type(None)),
}


def read_meta(manifest: str | Path) -> dict[str, Any]:
    """Read and check ``<manifest>.meta.json`` (empty when absent).

    Raises:
        InputError: the file is not a JSON object, or a known key holds a value of the wrong type; the
            message names the file and the key.

    """
    path = sidecar(manifest, "meta.json")
    if not path.is_file():
        return {}
    try:
        meta = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not readable JSON ({error}); restore it or scan again with --overwrite") from error
    if not isinstance(meta, dict):
        raise InputError(f"{path} must hold a JSON object; restore it or scan again with --overwrite")
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise InputError(f"{path}: key '{key}' holds {meta[key]!r}, of the wrong type; restore the file or scan "
                             "again with --overwrite")
    for key in ("threshold", "keep_boundary", "keep_fraction"):
        if isinstance(meta.get(key), int | float) and not is_finite(meta[key]):
            raise InputError(f"{path}: key '{key}' is not a finite number; restore the file or scan again with "
                             "--overwrite")
    return meta



class ManifestWriter:
    """Appends rows to a manifest, flushing after every batch.

    Args:
        path: The manifest file; its suffix picks the format.
        append: Keep the rows already there (resume); a torn last line is cut off first.

    """

    def __init__(self, path: str | Path, *, append: bool) -> None:
        self.path = Path(path)
        self.format = manifest_format(self.path)
        if self.format == ".parquet":
            _require_pyarrow()
        self._journal = sidecar(self.path, "partial.jsonl") if self.format == ".parquet" else self.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._append = append
        if append and self._journal.is_file():
            _truncate_torn_tail(self._journal)
        mode = "a" if append else "w"
        try:
            self._handle: IO[str] = open(self._journal, mode, encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as error:
            raise os_error("open the manifest", self._journal, error) from error
        self._csv: Any = None
        if self.format == ".csv":
            self._csv = csv.DictWriter(self._handle, fieldnames=COLUMNS, extrasaction="ignore")
            if self._handle.tell() == 0:
                self._csv.writeheader()

    def write(self, rows: list[ManifestRow]) -> None:
        """Append ``rows`` and flush them to the operating system."""
        try:
            if self._csv is not None:
                self._csv.writerows([_csv_record(row) for row in rows])
            else:
                self._handle.write("".join(json.dumps(row.to_dict()) + "\n" for row in rows))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:  # a torn last record is cut when the scan is resumed
            raise os_error("write the manifest", self._journal, error) from error

    def close(self) -> None:
        """Close the file; for Parquet, write all rows to the Parquet file and drop the journal."""
        self._handle.close()
        if self.format == ".parquet":
            kept = list(_iter_parquet(self.path)) if self._append and self.path.is_file() else []
            rows = kept + list(_iter_jsonl(self._journal))
            _write_parquet_atomically(self.path, rows)
            self._journal.unlink(missing_ok=True)


def rewrite_manifest(path: str | Path, rows: list[ManifestRow]) -> Path:
    """Replace a finished manifest's rows with ``rows`` in one atomic step (a crash leaves the old file).

    Used when decisions are made after scoring (``--keep-fraction``): the rows are the same inputs with
    their decisions filled in.
    """
    out = Path(path)
    fmt = manifest_format(out)
    if fmt == ".parquet":
        _write_parquet_atomically(out, rows)  # rows read with read_manifest include the partial journal's
        sidecar(out, "partial.jsonl").unlink(missing_ok=True)
        return out

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            if fmt == ".csv":
                writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows([_csv_record(row) for row in rows])
            else:
                handle.write("".join(json.dumps(row.to_dict()) + "\n" for row in rows))

    return atomic_write(out, write)  # an OSError becomes an OutputError naming the file


def _csv_record(row: ManifestRow) -> dict[str, Any]:
    return {column: "" if value is None else value for column, value in row.to_dict().items()}


def _truncate_torn_tail(path: Path) -> None:
    """Cut a final record that a crash left incomplete.

    That is a JSONL line without its newline, or a CSV record torn anywhere, even inside a quoted field
    that holds newlines.
    """
    data = path.read_bytes()
    keep = _complete_csv_length(data) if path.suffix.lower() == ".csv" else data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "rb+") as handle:
            handle.truncate(keep)


def _decoded_prefix(data: bytes) -> str:
    """Decode UTF-8, dropping a multi-byte character that a crash cut at the very end."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(data) - 3:
            raise
        return data[: error.start].decode("utf-8")


def _complete_csv_records(text: str) -> tuple[list[list[str]], int]:
    """Parse the complete CSV records of ``text``: (records, characters they span).

    A record counts only when its terminating newline was written; a quoted field left open by a crash
    ends the parse.
    """
    buffer = io.StringIO(text, newline="")
    reader = csv.reader(buffer)
    records: list[list[str]] = []
    end = 0
    while True:
        try:
            record = next(reader)
        except (StopIteration, csv.Error):
            return records, end
        position = buffer.tell()
        if not text[:position].endswith("\n"):
            return records, end
        records.append(record)
        end = position


def _complete_csv_length(data: bytes) -> int:
    text = _decoded_prefix(data)
    return len(text[: _complete_csv_records(text)[1]].encode("utf-8"))


def _iter_jsonl(path: Path) -> Iterator[ManifestRow]:
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):  # the part after the last newline is torn
                return
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InputError(f"manifest {path} line {number} is not valid JSON ({error}); fix or remove it") \
                    from error
            if not isinstance(record, dict):
                raise InputError(f"manifest {path} line {number} is not a JSON object; fix or remove it")
            yield row_from_record(record, f"{path} line {number}")


def _read_csv(path: Path) -> list[ManifestRow]:
    try:
        text = _decoded_prefix(path.read_bytes())
    except UnicodeDecodeError as error:
        raise InputError(f"manifest {path} is not UTF-8 text ({error})") from error
    records, _ = _complete_csv_records(text)
    if not records:
        return []
    header, rows = records[0], []
    for number, record in enumerate(records[1:], start=2):
        where = f"{path} record {number}"
        if len(record) != len(header):
            raise InputError(f"manifest {where}: {len(record)} fields where the header has {len(header)}")
        rows.append(row_from_record({column: _csv_value(column, text, where) for column, text in zip(header, record,
                                                                                                     strict=True)},
                                    where))
    return rows


def _csv_value(column: str | None, text: str | None, where: str) -> Any:
    """Type one CSV cell by its column ("" is None); a bad number or decision is an error naming the column."""
    if text is None or text == "":
        return None
    if column in ("ood_score", "top_prob"):
        try:
            return float(text)
        except ValueError as error:
            raise InputError(f"manifest {where}: column '{column}' holds {text!r}, not a number") from error
    if column == "is_ood":
        if text not in ("True", "False"):
            raise InputError(f"manifest {where}: column 'is_ood' holds {text!r}; expected True, False or empty")
        return text == "True"
    return text


def _require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise MissingDependencyError(
            "Parquet manifests need pyarrow: pip install 'oodfilter[parquet]', or use a .jsonl or .csv output"
        ) from error
    return pyarrow


def _iter_parquet(path: Path) -> Iterator[ManifestRow]:
    _require_pyarrow()
    import pyarrow.parquet as pq

    number = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=65536)
        for batch in batches:
            for record in batch.to_pylist():
                number += 1
                yield row_from_record(record, f"{path} row {number}")
    except InputError:
        raise
    except Exception as error:  # pyarrow raises its own error types for damaged files
        raise InputError(f"manifest {path} is not a readable Parquet file ({error})") from error


def _write_parquet_atomically(path: Path, rows: list[ManifestRow]) -> None:
    pa = _require_pyarrow()
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("path", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("ood_score", pa.float64()),
            ("is_ood", pa.bool_()),
            ("top_class", pa.string()),
            ("top_prob", pa.float64()),
        ]
    )
    table = pa.Table.from_pylist([row.to_dict() for row in rows], schema=schema)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
