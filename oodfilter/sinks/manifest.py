"""Scan manifests: one row per input, written incrementally, readable after a crash.

Formats by suffix: ``.jsonl`` (default), ``.csv``, ``.parquet`` (needs the ``parquet`` extra). JSONL and
CSV are appended and flushed batch by batch; a line cut short by a crash is dropped when the manifest is
reopened (a JSONL reader warns that it was not read; a last line that is a whole row without its newline
is read, and kept by a resume). Parquet cannot be appended safely, so its rows go to
``<out>.partial.jsonl`` while the scan runs and are written to the Parquet file (atomically) when it
finishes. File names that are not UTF-8 keep their exact bytes in every format (see :mod:`oodfilter.sinks.names`).

and are written to the Parquet file (atomically) when it finishes. The Parquet file records the size and
digest of the journal it took in, so a kill between its rename and the journal's removal leaves a journal
that every reader knows is already merged (and the next writer removes).

A path has one row: every reader yields each path's first row only, and warns when a manifest repeats
one (a hand-edited file, or one an older version left after such a kill). The first row is the one the
scan acted on: a resume skips a path that has a row, and the scan's own tally counts a path's first row.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from oodfilter.atomic import atomic_write
from oodfilter.errors import InputError, MissingDependencyError
from oodfilter.finite import is_finite
from oodfilter.json_parse import parse_json
from oodfilter.messages import excerpt
from oodfilter.outputs import os_error
from oodfilter.sinks.names import ENCODING, ERRORS, arrow_text_column, from_arrow_value
from oodfilter.sinks.path_set import PathSet
from oodfilter.sinks.rows import ALL_COLUMNS, COLUMNS, ManifestRow, columns_of, row_from_record

FORMATS = (".jsonl", ".csv", ".parquet")
_BOM = "\ufeff"  # the byte order mark that "utf-8-sig" writers put first


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


def check_manifest_file(path: str | Path) -> None:
    """Refuse a manifest path that is not a file (missing, a folder) before anything reads it.

    Raises:
        InputError: names the path and what to pass instead.

    """
    if not Path(path).is_file():
        raise InputError(f"manifest {path} does not exist (or is not a file); pass a manifest oodfilter scan wrote")


def no_rows_error(path: str | Path) -> InputError:
    """Return the error for a manifest that holds no row (empty, or nothing in it is a complete record)."""
    return InputError(f"manifest {path} has no rows; scan first")


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read and validate every complete row of a manifest (and, for Parquet, of its partial journal).

    Raises:
        InputError: an unknown format, or a record that is not a valid row (the message names the file,
            the line and the column).

    """
    return list(iter_manifest(path))


def iter_manifest(path: str | Path) -> Iterator[ManifestRow]:
    """Yield every complete row of a manifest, validated, in file order, each path's first row only.

    JSONL manifests are read line by line and Parquet ones batch by batch, so memory grows only by 32-64
    bytes per path (its digest, to tell a repeated path: :class:`PathSet`); a CSV manifest is parsed
    whole first (a record torn by a crash can only be told by reading to its end). A repeated path is
    warned about once per reading.
    Raises as :func:`read_manifest`, when the bad record is reached.
    """
    yield from first_row_per_path(_all_rows(Path(path)), path)


def first_row_per_path(rows: Iterable[ManifestRow], where: str | Path) -> Iterator[ManifestRow]:
    """Yield the first row of each path of ``rows``; warn (once) that ``where`` repeats a path, if it does."""
    seen = PathSet()
    warned = False
    for row in rows:
        if seen.add(row.path):
            yield row
        elif not warned:
            warned = True
            warnings.warn(f"manifest {where} has more than one row for {row.path!r}: only its first row is used "
                          "(a path is never counted twice); remove the repeated rows to silence this", stacklevel=3)


def _all_rows(out: Path) -> Iterator[ManifestRow]:
    """Yield every complete row in file order, repeats included (a merged Parquet journal is not read)."""
    fmt = manifest_format(out)
    if fmt == ".parquet":
        journal = sidecar(out, "partial.jsonl")
        if out.is_file():
            yield from _iter_parquet(out)
            if _journal_merged(out, journal):  # a kill came between the Parquet file's rename and its removal
                return
        yield from _iter_jsonl(journal)
    elif out.is_file():
        yield from _iter_jsonl(out) if fmt == ".jsonl" else _read_csv(out)


# Keys of <manifest>.meta.json and the types a reader relies on (other keys are kept, unchecked).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "threshold": (float, int, type(None)), "fingerprints": (dict,), "classes_sha256": (str,),
    "cwd": (str,), "decision": (str, type(None)), "model": (str,), "num_classes": (int,),
    "templates": (str, list), "templates_sha256": (str,), "decision_rule": (dict, type(None)),
    "calibration": (dict, type(None)),
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
            raise InputError(f"{path}: key '{key}' holds {excerpt(meta[key])}, of the wrong type; restore the file or "
                             "scan again with --overwrite")
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
        label_columns: Give a new CSV file the label check's columns (``folder_class``, ``label_issue``);
            an appended CSV keeps its header's columns. JSONL and Parquet rows carry them when set.

    """

    def __init__(self, path: str | Path, *, append: bool, label_columns: bool = False) -> None:
        self.path = Path(path)
        self.format = manifest_format(self.path)
        if self.format == ".parquet":
            _require_pyarrow()
        self._journal = sidecar(self.path, "partial.jsonl") if self.format == ".parquet" else self.path
        self._append = append
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == ".parquet" and self.path.is_file():
                if not append:  # replaced from the start, as a JSONL one is: its rows never mix with the new ones
                    self.path.unlink()
                elif _journal_merged(self.path, self._journal):  # finish a finalisation a kill interrupted
                    self._journal.unlink()
            if append and self._journal.is_file():
                _truncate_torn_tail(self._journal)
            mode = "a" if append else "w"
            self._handle: IO[str] = open(self._journal, mode, encoding=ENCODING, errors=ERRORS,  # noqa: SIM115
                                         newline="")
        except OSError as error:
            raise os_error("open the manifest", self._journal, error) from error
        self._csv: Any = None
        if self.format == ".csv":
            fresh = self._handle.tell() == 0
            columns = (ALL_COLUMNS if label_columns else COLUMNS) if fresh else _csv_header(self._journal)
            self._csv = csv.DictWriter(self._handle, fieldnames=columns, extrasaction="ignore")
            if fresh:
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
        try:
            self._handle.close()
        except OSError as error:  # the last buffered rows did not reach the disk
            raise os_error("write the manifest", self._journal, error) from error
        if self.format == ".parquet":
            _finalise_parquet(self.path, list(iter_manifest(self.path)))

    def abort(self) -> None:
        """Close after a failure, raising nothing: the rows flushed so far stay, for a resume to continue.

        A Parquet manifest keeps its rows in the journal (no Parquet file is written on a failing disk).
        """
        with contextlib.suppress(OSError):  # the failure being reported already names this file
            self._handle.close()


def finish_manifest(path: str | Path) -> None:
    """Finish a Parquet manifest that a kill left with rows in its journal (JSONL and CSV need nothing).

    Raises:
        OutputError: the Parquet file cannot be written (names it and the fix).

    """
    out = Path(path)
    if manifest_format(out) == ".parquet" and sidecar(out, "partial.jsonl").is_file():
        ManifestWriter(out, append=True).close()


def _finalise_parquet(path: Path, rows: list[ManifestRow]) -> None:
    """Write ``rows`` (the Parquet file's and its journal's) as the Parquet file, then drop the journal.

    The Parquet file records the journal it took in, so a kill between the two steps leaves a journal that
    readers skip and the next writer removes: each row is read once whenever the process stops.
    """
    journal = sidecar(path, "partial.jsonl")
    _write_parquet_atomically(path, rows, merged=_journal_identity(journal))
    try:
        journal.unlink(missing_ok=True)
    except OSError as error:
        raise os_error("remove the merged journal", journal, error) from error


def rewrite_manifest(path: str | Path, rows: list[ManifestRow]) -> Path:
    """Replace a finished manifest's rows with ``rows`` in one atomic step (a crash leaves the old file).

    Used when decisions are made after scoring (``--keep-fraction``): the rows are the same inputs with
    their decisions filled in.
    """
    out = Path(path)
    fmt = manifest_format(out)
    if fmt == ".parquet":
        _finalise_parquet(out, rows)  # rows read with read_manifest include the partial journal's
        return out

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding=ENCODING, errors=ERRORS, newline="") as handle:
            if fmt == ".csv":
                writer = csv.DictWriter(handle, fieldnames=columns_of(rows), extrasaction="ignore")
                writer.writeheader()
                writer.writerows([_csv_record(row) for row in rows])
            else:
                handle.write("".join(json.dumps(row.to_dict()) + "\n" for row in rows))

    return atomic_write(out, write)  # an OSError becomes an OutputError naming the file


def _csv_header(path: Path) -> tuple[str, ...]:
    """Return the columns of an existing CSV manifest's header (the known ones: a resume appends to it)."""
    with open(path, encoding=ENCODING, errors=ERRORS, newline="") as handle:
        header = [name.removeprefix(_BOM) for name in next(csv.reader(handle), [])]
    return ALL_COLUMNS if all(column in header for column in ALL_COLUMNS) else COLUMNS


def _csv_record(row: ManifestRow) -> dict[str, Any]:
    return {column: "" if value is None else value for column, value in row.to_dict().items()}


def _truncate_torn_tail(path: Path) -> None:
    """Cut a final record that a crash left incomplete.

    That is a JSONL line without its newline, or a CSV record torn anywhere, even inside a quoted field
    that holds newlines.
    """
    data = path.read_bytes()
    keep = _complete_csv_length(data, path) if path.suffix.lower() == ".csv" else data.rfind(b"\n") + 1
    if keep == len(data):
        return
    if path.suffix.lower() != ".csv" and _is_json_object(data[keep:]):  # a whole row: readers count it, so keep it
        with open(path, "ab") as handle:
            handle.write(b"\n")
        return
    with open(path, "rb+") as handle:
        handle.truncate(keep)


def _is_json_object(line: bytes) -> bool:
    """Whether ``line`` is one whole JSON object (a JSONL row's last line that only lacks its newline)."""
    try:
        return isinstance(parse_json(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _complete_csv_records(text: str, path: Path) -> tuple[list[list[str]], int]:
    """Parse the complete CSV records of ``text``: (records, characters they span).

    A record counts only when its terminating newline was written outside quotes: the last record is
    dropped when it lacks its newline, or when the text ends inside a quoted field (a crash right after a
    newline that a field holds, which the parser would otherwise close at the end of the text).

    Raises:
        InputError: a record the CSV parser refuses (a field over its size limit); the message names it.

    """
    buffer = io.StringIO(text, newline="")
    reader = csv.reader(buffer)
    records: list[list[str]] = []
    end = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return records, end
        except csv.Error as error:
            raise InputError(f"manifest {path} record {len(records) + 1} is not valid CSV ({error}); fix or remove "
                             "it") from error
        position = buffer.tell()
        if not text[:position].endswith("\n"):
            return records, end
        if position == len(text) and _ends_inside_quotes(text[end:position]):
            return records, end
        records.append(record)
        end = position


def _ends_inside_quotes(record: str) -> bool:
    """Whether one CSV record's text ends inside a quoted field.

    The parser's rules: a quote opens a field only at its start, and a doubled quote inside one is a quote.
    """
    quoted, field_start, index = False, True, 0
    while index < len(record):
        char = record[index]
        if quoted:
            if char == '"':
                if record.startswith('"', index + 1):
                    index += 1  # an escaped quote: still inside
                else:
                    quoted = False
        elif char == '"' and field_start:
            quoted = True
        field_start = not quoted and char in ",\r\n"
        index += 1
    return quoted


def _complete_csv_length(data: bytes, path: Path) -> int:
    text = data.decode(ENCODING, ERRORS)  # every byte is kept: a name's own bytes, or a character torn by a crash
    return len(text[: _complete_csv_records(text, path)[1]].encode(ENCODING, ERRORS))


def _iter_jsonl(path: Path) -> Iterator[ManifestRow]:
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n") and not _is_json_object(line):  # torn: a write cut short
                if line.strip():
                    _warn_incomplete(path, f"its last line (line {number}) is incomplete")
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


def _warn_incomplete(path: Path, what: str) -> None:
    """Warn that the end of a manifest was cut short (so not read), naming the file."""
    warnings.warn(f"manifest {path}: {what}, e.g. from an interrupted write, and was not read; a scan resumed with "
                  "--resume scores that file again, or complete or remove it by hand", stacklevel=3)


def _read_csv(path: Path) -> list[ManifestRow]:
    text = path.read_bytes().decode(ENCODING, ERRORS)  # names that are not UTF-8 are stored as their bytes
    text = text.removeprefix(_BOM)  # a spreadsheet's "CSV UTF-8" starts with one
    records, end = _complete_csv_records(text, path)
    if text[end:].strip():  # a record without its newline may be cut anywhere (a number, a name): never guessed at
        _warn_incomplete(path, f"its last record (record {len(records) + 1}, or its end) is incomplete")
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
            raise InputError(f"manifest {where}: column '{column}' holds {excerpt(text)}, not a number") from error
    if column in ("is_ood", "label_issue"):
        if text not in ("True", "False"):
            raise InputError(f"manifest {where}: column '{column}' holds {excerpt(text)}; expected True, False or "
                             "empty")
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
                yield row_from_record({key: from_arrow_value(value) for key, value in record.items()},
                                      f"{path} row {number}")
    except InputError:
        raise
    except Exception as error:  # pyarrow raises its own error types for damaged files
        raise InputError(f"manifest {path} is not a readable Parquet file ({error})") from error


_MERGED_KEY = b"oodfilter.merged_journal"


def _journal_identity(journal: Path) -> dict[str, Any] | None:
    """Return the size and sha256 of a partial journal (None when there is none)."""
    if not journal.is_file():
        return None
    digest = hashlib.sha256()
    size = 0
    try:
        with open(journal, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
    except OSError as error:
        raise os_error("read the journal", journal, error) from error
    return {"size": size, "sha256": digest.hexdigest()}


def _journal_merged(path: Path, journal: Path) -> bool:
    """Whether the Parquet file ``path`` already holds every row of ``journal`` (recorded when it was written)."""
    if not journal.is_file() or not path.is_file():
        return False
    _require_pyarrow()
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        recorded = json.loads(metadata[_MERGED_KEY]) if _MERGED_KEY in metadata else None
    except Exception:  # a damaged file: reading its rows says so, naming it
        return False
    if not isinstance(recorded, dict) or recorded.get("size") != journal.stat().st_size:
        return False
    return recorded == _journal_identity(journal)


def _write_parquet_atomically(path: Path, rows: list[ManifestRow], merged: dict[str, Any] | None = None) -> None:
    pa = _require_pyarrow()
    import pyarrow.parquet as pq

    columns = {
        "path": arrow_text_column(pa, [row.path for row in rows]),
        "status": pa.array([row.status for row in rows], type=pa.string()),
        "error": arrow_text_column(pa, [row.error for row in rows]),
        "ood_score": pa.array([row.ood_score for row in rows], type=pa.float64()),
        "is_ood": pa.array([row.is_ood for row in rows], type=pa.bool_()),
        "top_class": arrow_text_column(pa, [row.top_class for row in rows]),
        "top_prob": pa.array([row.top_prob for row in rows], type=pa.float64()),
    }
    if columns_of(rows) == ALL_COLUMNS:  # a scan with the class list from folders: its label check
        columns["folder_class"] = arrow_text_column(pa, [row.folder_class for row in rows])
        columns["label_issue"] = pa.array([row.label_issue for row in rows], type=pa.bool_())
    table = pa.table(columns)
    if merged is not None:
        table = table.replace_schema_metadata({_MERGED_KEY: json.dumps(merged).encode()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
