"""The file-action journal: one JSON line per action, written and fsynced before the action runs.

A line records what ``undo`` needs to recognise the action's result and nothing else: the operation,
both paths, the resolved destination root, the token of the temporary names used, the fingerprint of
what lands at ``dst`` (a file's SHA-256, or a link's target), and an HMAC of all that under the key
kept in the root's marker (see ``dest_root``), so a line edited by hand no longer verifies. Because
the fingerprint is known before the action starts, a kill at any moment leaves a state ``undo`` can
tell apart by looking at the files: nothing done, done, or (a move) both names identical.

Every line is checked before anything is acted on: its schema and types as a whole (a malformed
journal is refused outright), and then each entry's paths (:func:`entry_problem`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from oodfilter.errors import InputError
from oodfilter.json_parse import parse_json
from oodfilter.sinks.safe_paths import Fingerprint

JOURNAL_VERSION = 2
FILE_OPS = ("move", "copy", "link")
_TOKEN = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TAIL_BLOCK = 1 << 16


@dataclass(frozen=True)
class JournalEntry:
    """One journaled file action and the fingerprint of what it puts at ``dst``."""

    op: str
    src: Path
    dst: Path
    dest_root: Path
    token: str
    result: Fingerprint
    mac: str = ""

    def to_json(self) -> str:
        """Return the entry as one JSON line (without the newline)."""
        return json.dumps({**self._fields(), "mac": self.mac}, ensure_ascii=False)

    def signed(self, key: str) -> JournalEntry:
        """Return the entry with its HMAC under ``key`` (the hex key of the root's marker)."""
        return replace(self, mac=self._mac(key))

    def verifies(self, key: str) -> bool:
        """Whether the entry's HMAC matches ``key``: the line is as the scan wrote it."""
        return hmac.compare_digest(self.mac, self._mac(key))

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "version": JOURNAL_VERSION, "op": self.op, "src": str(self.src), "dst": str(self.dst),
            "dest_root": str(self.dest_root), "token": self.token, "kind": self.result.kind,
        }
        fields["sha256" if self.result.kind == "file" else "target"] = self.result.value
        return fields

    def _mac(self, key: str) -> str:
        payload = json.dumps(self._fields(), ensure_ascii=False, sort_keys=True).encode("utf-8")
        return hmac.new(bytes.fromhex(key), payload, hashlib.sha256).hexdigest()


def parse_entry(entry: Any, where: str) -> JournalEntry:
    """Check one decoded line's schema and types and build the entry.

    Raises:
        InputError: a field is missing, of the wrong type or malformed (``where`` names the line).

    """
    if not isinstance(entry, dict):
        raise InputError(f"{where} is not a journal entry (a JSON object)")
    if entry.get("version") != JOURNAL_VERSION:
        raise InputError(
            f"{where} was written by another version of oodfilter (no content hashes); undo it by hand: "
            "each line names the file's original place (src) and where it went (dst)"
        )
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
        raise InputError(f"{where}: 'kind' {kind!r} does not fit the operation {op!r}")
    return JournalEntry(op, paths["src"], paths["dst"], paths["dest_root"], entry["token"],
                        Fingerprint(kind, value), entry["mac"])


def _path_field(entry: dict[str, Any], name: str, where: str) -> Path:
    value = entry.get(name)
    if not isinstance(value, str) or "\0" in value or not os.path.isabs(value):
        raise InputError(f"{where}: '{name}' must be an absolute path")
    return Path(value)


def _match_field(entry: dict[str, Any], name: str, pattern: re.Pattern[str], where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InputError(f"{where}: '{name}' is missing or malformed")
    return value


def entry_problem(entry: JournalEntry) -> str | None:
    """Why the entry's paths cannot be trusted, or None.

    ``dst`` must lie strictly inside ``dest_root`` (which must be a resolved path), without ``.`` or
    ``..``; ``src`` must lie outside the root and end with the same relative path (the scan keeps
    relative paths), so an edited line cannot aim at an unrelated file.
    """
    root, dst, src = entry.dest_root, entry.dst, entry.src
    if os.path.normpath(root) != str(root) or root == Path(root.anchor):
        return f"its destination root {root} is not a normalised folder path below /"
    if os.path.normpath(dst) != str(dst) or not dst.is_relative_to(root) or dst == root:
        return f"it lies outside the destination root {root}"
    if src.is_relative_to(root):
        return f"its original place {src} lies inside the destination root {root}"
    relative = dst.relative_to(root).parts
    if src.parts[-len(relative) :] != relative:
        return f"its original place {src} does not end with its path inside the destination root"
    return None


def read_journal(path: Path) -> list[JournalEntry]:
    """Read and check every complete line of a journal (a torn last line, from a kill, is ignored).

    Raises:
        InputError: the journal is missing, or a line is not valid JSON or not a valid entry.

    """
    if not path.is_file():
        raise InputError(f"journal {path} does not exist; pass the <manifest>.journal.jsonl a scan wrote")
    entries = []
    lines = path.read_bytes().split(b"\n")[:-1]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"journal {path} line {number}"
        try:
            decoded = parse_json(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{where} is not valid JSON ({error}); restore the journal (nothing was undone)") \
                from error
        entries.append(parse_entry(decoded, where))
    return entries


class JournalWriter:
    """Append entries to a journal, each fsynced before the action it describes runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        self._handle: IO[bytes] = open(path, "ab")  # noqa: SIM115 (closed by close())
        _drop_torn_tail(self._handle)
        if new:
            _fsync_folder(path.parent)

    def append(self, entry: JournalEntry) -> None:
        """Write ``entry`` as one line and make it durable."""
        self._handle.write(entry.to_json().encode("utf-8") + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

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
    """Cut a last line without its newline (a kill while writing it: its action never started)."""
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
        handle.truncate(keep)
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
