"""The file-action journal: one JSON line per action, written and fsynced before the action runs.

Each run of file actions first writes a header line: a random id and the folders the scan read from (its
input roots). Each action line records what ``undo`` needs to recognise the action's result and nothing
else: the header's id, the operation, both paths, the resolved destination root, the token of the
temporary names used, and the fingerprint of what lands at ``dst`` (a file's SHA-256, or a link's
target). Every line carries an HMAC under the user's own journal key (:mod:`oodfilter.sinks.user_key`,
kept in the user's state folder, never beside the files), so a line edited by hand, a line moved under
another header, or a journal another user (or an attacker who controls the folder) wrote does not
verify. Because the fingerprint is known before the action starts, a kill at any moment leaves a state
``undo`` can tell apart by looking at the files: nothing done, done, or (a move) both names identical.

Every line is checked before anything is acted on: its schema and types as a whole (a malformed
journal is refused outright), then each entry's signature (:func:`trust_problem`) and paths
(:func:`entry_problem`): ``src`` must be the entry's path inside the destination root, below one of the
header's input roots. Names that are not UTF-8 are stored with JSON's escapes (see ``names``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json
from oodfilter.messages import excerpt
from oodfilter.sinks.safe_paths import Fingerprint
from oodfilter.sinks.user_key import key_path

JOURNAL_VERSION = 3
FILE_OPS = ("move", "copy", "link")
_TOKEN = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TAIL_BLOCK = 1 << 16
_BY_HAND = ("undo it by hand: each line names the file's original place (src) and where it went (dst); move "
            "each file back from dst to src, or remove a copy or link at dst")


def _mac(key: bytes, fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, ensure_ascii=True, sort_keys=True).encode("ascii")  # every name, as JSON escapes
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class JournalHeader:
    """The line a run of file actions starts with: its id and the folders the scan read its files from."""

    id: str
    inputs: tuple[Path, ...]
    mac: str = ""

    @classmethod
    def new(cls, inputs: Iterable[Path]) -> JournalHeader:
        """Return an unsigned header with a fresh id for a run that read from the folders ``inputs``.

        The folders are kept as the scan named them (made absolute, ``..`` kept), as its files' paths are.
        """
        return cls(secrets.token_hex(8), tuple(sorted({Path(path).absolute() for path in inputs})))

    def to_json(self) -> str:
        """Return the header as one JSON line (without the newline)."""
        return json.dumps({**self._fields(), "mac": self.mac})

    def signed(self, key: bytes) -> JournalHeader:
        """Return the header with its HMAC under the user's journal key."""
        return replace(self, mac=_mac(key, self._fields()))

    def verifies(self, key: bytes) -> bool:
        """Whether the header's HMAC matches ``key``: this user's oodfilter wrote it, unchanged."""
        return hmac.compare_digest(self.mac, _mac(key, self._fields()))

    def _fields(self) -> dict[str, Any]:
        return {"version": JOURNAL_VERSION, "record": "header", "id": self.id,
                "inputs": [str(path) for path in self.inputs]}


@dataclass(frozen=True)
class JournalEntry:
    """One journaled file action, the header of its run, and the fingerprint of what it puts at ``dst``."""

    header: JournalHeader
    op: str
    src: Path
    dst: Path
    dest_root: Path
    token: str
    result: Fingerprint
    mac: str = ""

    def to_json(self) -> str:
        """Return the entry as one JSON line (without the newline)."""
        return json.dumps({**self._fields(), "mac": self.mac})

    def signed(self, key: bytes) -> JournalEntry:
        """Return the entry with its HMAC under the user's journal key."""
        return replace(self, mac=_mac(key, self._fields()))

    def verifies(self, key: bytes) -> bool:
        """Whether the entry's HMAC matches ``key``: the line is as this user's scan wrote it, in its run."""
        return hmac.compare_digest(self.mac, _mac(key, self._fields()))

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "version": JOURNAL_VERSION, "record": "action", "journal": self.header.id, "op": self.op,
            "src": str(self.src), "dst": str(self.dst), "dest_root": str(self.dest_root), "token": self.token,
            "kind": self.result.kind,
        }
        fields["sha256" if self.result.kind == "file" else "target"] = self.result.value
        return fields


def parse_header(record: dict[str, Any], where: str) -> JournalHeader:
    """Check one decoded header line's schema and types and build the header.

    Raises:
        InputError: a field is missing, of the wrong type or malformed (``where`` names the line).

    """
    inputs = record.get("inputs")
    if not isinstance(inputs, list) or not all(_is_absolute(path) for path in inputs):
        raise InputError(f"{where}: 'inputs' must be a list of absolute paths")
    identity = _match_field(record, "id", _TOKEN, where)
    mac = _match_field(record, "mac", _SHA256, where)
    return JournalHeader(identity, tuple(Path(path) for path in inputs), mac)


def parse_entry(entry: Any, where: str, headers: dict[str, JournalHeader] | None = None) -> JournalEntry:
    """Check one decoded action line's schema and types and build the entry.

    ``headers`` are the journal's headers read so far, by id: the line must name one of them.

    Raises:
        InputError: a field is missing, of the wrong type or malformed, the version is another one, or the
            line names no header before it (``where`` names the line).

    """
    if not isinstance(entry, dict):
        raise InputError(f"{where} is not a journal entry (a JSON object)")
    _check_version(entry, where)
    if entry.get("record") != "action":
        raise InputError(f"{where}: 'record' must be 'action' (or 'header')")
    identity = _match_field(entry, "journal", _TOKEN, where)
    header = (headers or {}).get(identity)
    if header is None:
        raise InputError(f"{where} names a journal header ({identity}) that no line before it holds; restore the "
                         "journal (nothing was undone)")
    paths = {name: _path_field(entry, name, where) for name in ("src", "dst", "dest_root")}
    op, kind = entry.get("op"), entry.get("kind")
    if op not in FILE_OPS:
        raise InputError(f"{where}: 'op' must be one of {', '.join(FILE_OPS)}")
    _match_field(entry, "token", _TOKEN, where)
    _match_field(entry, "mac", _SHA256, where)
    value = entry.get("target")
    if kind == "file" and op != "link":
        value = _match_field(entry, "sha256", _SHA256, where)
    elif kind == "symlink" and op != "copy":
        if not isinstance(value, str) or not value or "\0" in value:
            raise InputError(f"{where}: 'target' must be the text of a symbolic link")
        if op == "link" and value != str(paths["src"]):
            raise InputError(f"{where}: a link entry's 'target' must be its 'src'")
    else:
        raise InputError(f"{where}: 'kind' {excerpt(kind)} does not fit the operation {excerpt(op)}")
    return JournalEntry(header, op, paths["src"], paths["dst"], paths["dest_root"], entry["token"],
                        Fingerprint(kind, value), entry["mac"])


def _check_version(record: dict[str, Any], where: str) -> None:
    version = record.get("version")
    if version == JOURNAL_VERSION:
        return
    if version == 2:
        raise InputError(
            f"{where} was written by an older oodfilter, which signed journals with a key kept beside the files, "
            "so anyone who can write that folder could have written this journal: undo will not act on it. "
            f"If you made this scan yourself, {_BY_HAND}"
        )
    raise InputError(f"{where} was written by another version of oodfilter (no content hashes); {_BY_HAND}")


def _is_absolute(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value and os.path.isabs(value)


def _path_field(entry: dict[str, Any], name: str, where: str) -> Path:
    value = entry.get(name)
    if not isinstance(value, str) or not _is_absolute(value):
        raise InputError(f"{where}: '{name}' must be an absolute path")
    return Path(value)


def _match_field(entry: dict[str, Any], name: str, pattern: re.Pattern[str], where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InputError(f"{where}: '{name}' is missing or malformed")
    return value


def trust_problem(entry: JournalEntry, key: bytes | None) -> str | None:
    """Why the entry cannot be trusted as this user's own (None when its header and line verify under ``key``)."""
    if key is None:
        return (f"you have no journal key ({key_path()}), so no journal can be verified as one your oodfilter "
                "wrote (another user's, or a forged one)")
    if not entry.header.verifies(key):
        return (f"its journal header does not verify under your key {key_path()} (another user's oodfilter wrote "
                "it, or it was edited or forged)")
    if not entry.verifies(key):
        return (f"the journal line does not verify under your key {key_path()} (it was edited, forged, or moved "
                "from another journal)")
    return None


def entry_problem(entry: JournalEntry) -> str | None:
    """Why the entry's paths cannot be trusted, or None.

    ``dst`` must lie strictly inside ``dest_root`` (which must be a resolved path), without ``.`` or
    ``..``; ``src`` must lie outside the root, and be that same relative path below one of the folders the
    scan read (its header's input roots), so undo restores only into places the scan read from.
    """
    root, dst, src = entry.dest_root, entry.dst, entry.src
    if os.path.normpath(root) != str(root) or root == Path(root.anchor):
        return f"its destination root {root} is not a normalised folder path below /"
    if os.path.normpath(dst) != str(dst) or not dst.is_relative_to(root) or dst == root:
        return f"it lies outside the destination root {root}"
    if src.is_relative_to(root):
        return f"its original place {src} lies inside the destination root {root}"
    relative = dst.relative_to(root)
    if not any(src == folder / relative for folder in entry.header.inputs):
        read = ", ".join(str(folder) for folder in entry.header.inputs) or "none"
        return f"its original place {src} is not below a folder the scan read ({read}) at its path in the destination"
    return None


def torn_tail(path: Path) -> str | None:
    """Say which last line of a journal is incomplete (cut short mid-line, so not read), or None.

    A last line without its newline that is a whole JSON object is read like any other (only its newline
    is missing); one that is not (a kill while it was written, or a truncated copy) cannot be read, and
    the action it records may have run, so the caller reports it.
    """
    data = path.read_bytes()
    tail = data[data.rfind(b"\n") + 1:]
    if not tail.strip() or _is_json_object(tail):
        return None
    number = data.count(b"\n") + 1
    return (f"journal {path} line {number} is incomplete (cut short mid-line: a kill while it was "
            "written, or a truncated copy) and was not read; the action it records, if it ran, was not undone: "
            "check that run's destination folder by hand, then remove the line")


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(parse_json(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def read_journal(path: Path) -> list[JournalEntry]:
    """Read and check every complete line of a journal (a torn last line is left out: see :func:`torn_tail`).

    Returns:
        The action entries, in journal order, each with its run's header (signatures not yet checked:
        see :func:`trust_problem`).

    Raises:
        InputError: the journal is missing, or a line is not valid JSON, not a valid header or entry, of
            another version, or names no header before it.

    """
    if not path.is_file():
        raise InputError(f"journal {path} does not exist; pass the <manifest>.journal.jsonl a scan wrote")
    headers: dict[str, JournalHeader] = {}
    entries = []
    lines = path.read_bytes().split(b"\n")
    if not _is_json_object(lines[-1]):  # blank, or torn mid-line; a whole object only lacks its newline
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"journal {path} line {number}"
        try:
            decoded = parse_json(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{where} is not valid JSON ({error}); restore the journal (nothing was undone)") \
                from error
        if isinstance(decoded, dict) and decoded.get("record") == "header":
            _check_version(decoded, where)
            header = parse_header(decoded, where)
            if headers.setdefault(header.id, header) != header:
                raise InputError(f"{where} repeats the id of an earlier header; restore the journal (nothing was "
                                 "undone)")
            continue
        entries.append(parse_entry(decoded, where, headers))
    return entries


class JournalWriter:
    """Append a run's entries to a journal, each fsynced before the action it describes runs.

    The run's (signed) header is written with its first entry, so a run that acts on nothing leaves the
    journal as it was.
    """

    def __init__(self, path: Path, header: JournalHeader) -> None:
        self.path = path
        self.header = header
        self._header_written = False
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        self._handle: IO[bytes] = open(path, "ab")  # noqa: SIM115 (closed by close())
        _drop_torn_tail(self._handle)
        if new:
            _fsync_folder(path.parent)

    def append(self, entry: JournalEntry) -> None:
        """Write ``entry`` (after the run's header, the first time) as one line and make it durable."""
        if entry.header.id != self.header.id:
            raise ValueError("a journal entry of another run cannot be appended")
        lines = [] if self._header_written else [self.header.to_json()]
        lines.append(entry.to_json())
        self._handle.write("".join(line + "\n" for line in lines).encode("ascii"))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._header_written = True

    def close(self) -> None:
        """Close the journal file."""
        self._handle.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _drop_torn_tail(handle: IO[bytes]) -> None:
    """Cut a last line without its newline (a kill while writing it: its action never started).

    A last line that is a whole JSON object is kept (readers read it) and given its newline.
    """
    size = os.fstat(handle.fileno()).st_size
    keep, end = 0, size
    with open(handle.name, "rb") as reader:
        while end > 0:
            start = max(0, end - _TAIL_BLOCK)
            reader.seek(start)
            newline = reader.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
    if keep != size:
        with open(handle.name, "rb") as reader:
            reader.seek(keep)
            whole = _is_json_object(reader.read())
        if whole:
            handle.write(b"\n")
            handle.flush()
        else:
            handle.truncate(keep)
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
