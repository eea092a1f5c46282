"""File actions on scan results (move, copy, link) with a journal that ``undo`` replays backwards.

Nothing is deleted and nothing is overwritten: a destination that exists is skipped and reported. For
each file the journal line (with the fingerprint of what will land at the destination) is written and
fsynced *before* the file is touched, and the file is written under a temporary name and published
without replacing anything (see ``file_ops``), so a kill at any moment leaves nothing the journal does
not know about and nothing partial under a final name. Operating-system failures (full disk, no
permission, read-only file system) stop the run with a :class:`FileActionError` naming the file and the
fix; temporary files are removed first. The journal is signed with the user's own key and names the
folders the scan read (see ``journal``); ``undo_journal`` (in ``undo``) reverses it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from oodfilter.errors import InputError
from oodfilter.sinks.action_report import ActionReport
from oodfilter.sinks.file_ops import ContentChangedError, copy_at, move_at, os_failure
from oodfilter.sinks.journal import (
    JournalEntry,
    JournalHeader,
    JournalWriter,
    entry_problem,
    read_journal,
    trust_problem,
)
from oodfilter.sinks.safe_paths import (
    At,
    FileActionError,
    Fingerprint,
    UnsafePathError,
    fingerprint_at,
    folder_inside,
    lstat_at,
    naming,
    remove_at,
    temp_name,
    user_folder,
)
from oodfilter.sinks.undo import undo_journal
from oodfilter.sinks.user_key import journal_key

__all__ = [
    "ACTIONS",
    "ActionReport",
    "FileActionError",
    "PlannedAction",
    "apply_actions",
    "plan_actions",
    "read_journal",
    "undo_journal",
]

ACTIONS = ("tag", "move", "copy", "link")
_RETRY = "run the same scan again (--resume skips the scoring)"
_DONE, _ALREADY = "done", "already"


@dataclass
class PlannedAction:
    """One file action: ``op`` (move, copy or link) from ``source`` to ``destination``."""

    op: str
    source: Path
    destination: Path
    dest_root: Path


def plan_actions(op: str, files: Iterable[tuple[Path, Path]], dest: Path) -> list[PlannedAction]:
    """Plan ``op`` for (file, path relative to its input root) pairs into ``dest``, keeping relative paths.

    The destination root is resolved (links in ``dest`` followed once, here), so every planned
    destination is a plain path below it.

    Raises:
        InputError: an unknown action.

    """
    if op not in ACTIONS or op == "tag":
        raise InputError(f"unknown file action '{op}'; choose move, copy or link")
    root = Path(os.path.realpath(dest))
    return [PlannedAction(op, source, root / relative, root) for source, relative in files]


def apply_actions(actions: list[PlannedAction], journal: Path) -> ActionReport:
    """Carry out ``actions``, journaling each one first; existing destinations are never overwritten.

    Actions a previous (interrupted) run already carried out are recognised by their journaled
    fingerprint and counted in ``already_done`` (only lines that verify under the user's key count).

    Raises:
        FileActionError: the file system refused (full disk, permission, read-only): the message names
            the file and the fix; completed actions stay journaled, so a rerun resumes.
        JournalKeyError: the user's journal key cannot be made or trusted (nothing was acted on).

    """
    report = ActionReport()
    key = journal_key(create=True) if actions else None  # made (or refused) before anything is touched
    previous: dict[tuple[str, Path, Path], list[JournalEntry]] = {}
    for entry in read_journal(journal) if journal.is_file() else []:
        if trust_problem(entry, key) is None:
            previous.setdefault((entry.op, entry.src, entry.dst), []).append(entry)
    placed = [(action, action.source.absolute(), action.destination.absolute(),
               Path(os.path.realpath(action.dest_root))) for action in actions]
    roots = {root for _, src, dst, dest_root in placed if (root := _input_root(src, dst, dest_root)) is not None}
    header = JournalHeader.new(roots)
    made: set[Path] = set()
    with JournalWriter(journal, header if key is None else header.signed(key)) as writer:
        for action, src, dst, dest_root in placed:
            try:
                outcome = _apply_one(action.op, src, dst, dest_root, previous, made, writer, key)
            except (ContentChangedError, UnsafePathError, FileExistsError) as reason:
                outcome = f"{action.op} of {src} skipped: {reason}"
            except OSError as error:
                raise os_failure(error, f"{action.op} {src} to {dst}", _RETRY) from error
            if outcome == _DONE:
                report.done += 1
            elif outcome == _ALREADY:
                report.already_done += 1
            else:
                report.skipped.append(outcome)
    return report


def _input_root(src: Path, dst: Path, dest_root: Path) -> Path | None:
    """Return the folder the scan read ``src`` from: ``src`` less ``dst``'s path inside the root (None: no such)."""
    if not dst.is_relative_to(dest_root) or dst == dest_root:
        return None
    relative = dst.relative_to(dest_root).parts
    return Path(*src.parts[: -len(relative)]) if src.parts[-len(relative) :] == relative else None


def _apply_one(
    op: str, src: Path, dst: Path, root: Path, previous: dict[tuple[str, Path, Path], list[JournalEntry]],
    made: set[Path], writer: JournalWriter, key: bytes | None,
) -> str:
    """Carry out one action; return ``_DONE``, ``_ALREADY`` or the message of a skip."""
    if op not in ACTIONS or op == "tag":
        raise InputError(f"unknown file action '{op}'; choose move, copy or link")
    if root not in made:
        with naming(root):
            root.mkdir(parents=True, exist_ok=True)
        made.add(root)
    unsigned = JournalEntry(writer.header, op, src, dst, root, secrets.token_hex(8), Fingerprint("file", ""))
    problem = entry_problem(unsigned)
    if problem is not None:
        return f"{op} of {src} to {dst} skipped: {problem}"
    with ExitStack() as stack:
        target = At(stack.enter_context(folder_inside(root, dst.parent, create=True)), dst.name, dst)
        try:
            source: At | None = At(stack.enter_context(user_folder(src.parent)), src.name, src)
        except FileNotFoundError:
            source = None
        earlier = previous.get((op, src, dst), [])
        for entry in earlier:  # temporary files of runs killed while writing them
            remove_at(At(target.folder, temp_name(dst.name, entry.token), target.path))
        if lstat_at(target) is not None:
            last = earlier[-1] if earlier else None
            return _resume(last, source, target, f"{dst} exists; {op} of {src} skipped")
        result = None if source is None else _source_fingerprint(op, source)
        if source is None or result is None:
            return f"{src} no longer exists (or is not a file); {op} skipped"
        if key is None:
            raise FileActionError("no journal key to sign the journal with; nothing was acted on")
        entry = replace(unsigned, result=result).signed(key)
        with naming(writer.path):
            writer.append(entry)
        _carry_out(entry, source, target)
    return _DONE


def _source_fingerprint(op: str, source: At) -> Fingerprint | None:
    """Fingerprint what will land at the destination: the bytes (a copy follows a link) or a link."""
    if op == "link":
        return Fingerprint("symlink", str(source.path)) if os.path.exists(source.path) else None
    found = fingerprint_at(source, follow=op == "copy")
    return found if found is not None and found.kind != "other" else None


def _carry_out(entry: JournalEntry, source: At, target: At) -> None:
    if entry.op == "copy":
        copy_at(source, target, entry.token, entry.result, follow=True)
    elif entry.op == "move":
        move_at(source, target, entry.token, entry.result)
    else:
        with naming(target.path):
            os.symlink(entry.result.value, target.name, dir_fd=target.folder)
            os.fsync(target.folder)


def _resume(earlier: JournalEntry | None, source: At | None, target: At, skip: str) -> str:
    """Handle a taken destination: finished by an earlier run (finish a half-done move), or skip it."""
    if earlier is None or fingerprint_at(target) != earlier.result:
        return f"{skip} (nothing is overwritten)"
    if earlier.op == "move" and source is not None and fingerprint_at(source) == earlier.result:
        remove_at(source)  # killed between placing the file and removing the original: finish the move
        return _DONE
    return _ALREADY
