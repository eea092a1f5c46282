"""File actions on scan results (move, copy, link) with a journal that ``undo`` replays backwards.

Nothing is deleted and nothing is overwritten: a destination that exists is skipped and reported. Each
action is written to the journal (and flushed) *before* it is carried out, so after a crash the journal
still names every file that may have moved; ``undo`` checks the state on disk before each step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodfilter.errors import InputError

ACTIONS = ("tag", "move", "copy", "link")


@dataclass
class PlannedAction:
    """One file action: ``op`` (move, copy or link) from ``source`` to ``destination``."""

    op: str
    source: Path
    destination: Path
    dest_root: Path


@dataclass
class ActionReport:
    """What happened: counts per outcome and the problems met."""

    done: int = 0
    already_done: int = 0
    skipped: list[str] = field(default_factory=list)


def plan_actions(op: str, files: Iterable[tuple[Path, Path]], dest: Path) -> list[PlannedAction]:
    """Plan ``op`` for (file, path relative to its input root) pairs into ``dest``, keeping relative paths.

    Raises:
        InputError: an unknown action.

    """
    if op not in ACTIONS or op == "tag":
        raise InputError(f"unknown file action '{op}'; choose move, copy or link")
    root = dest.absolute()
    return [PlannedAction(op, source, root / relative, root) for source, relative in files]


def apply_actions(actions: list[PlannedAction], journal: Path) -> ActionReport:
    """Carry out ``actions``, journaling each one first; existing destinations are never overwritten."""
    report = ActionReport()
    journal.parent.mkdir(parents=True, exist_ok=True)
    done_before = {(e["op"], e["src"], e["dst"]) for e in read_journal(journal)} if journal.is_file() else set()
    with open(journal, "a", encoding="utf-8") as log:
        for action in actions:
            src, dst = action.source.absolute(), action.destination.absolute()
            key = (action.op, str(src), str(dst))
            if key in done_before and _looks_done(action.op, src, dst):
                report.already_done += 1
                continue
            if _present(dst):
                report.skipped.append(f"{dst} exists; {action.op} of {src} skipped (nothing is overwritten)")
                continue
            if not _present(src):
                report.skipped.append(f"{src} no longer exists; {action.op} skipped")
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if key not in done_before:
                entry = {"op": action.op, "src": str(src), "dst": str(dst), "dest_root": str(action.dest_root)}
                log.write(json.dumps(entry) + "\n")
                log.flush()
                os.fsync(log.fileno())
            _carry_out(action.op, src, dst)
            report.done += 1
    return report


def undo_journal(journal: str | Path) -> ActionReport:
    """Reverse every action in ``journal``, newest first; each step checks the files are as left.

    A move is moved back (if the original place is still free); a copy or link made by the scan is
    removed only if it is still that copy (same size) or that link. Folders the actions created in the
    destination are removed when they end up empty.
    """
    path = Path(journal)
    entries = read_journal(path)
    report = ActionReport()
    for entry in reversed(entries):
        op, src, dst = entry["op"], Path(entry["src"]), Path(entry["dst"])
        if op == "move":
            if not _present(dst):
                if _present(src):
                    report.already_done += 1  # never moved, or already restored
                else:
                    report.skipped.append(f"{dst} is gone and {src} is missing; cannot restore it")
                continue
            if _present(src):
                report.skipped.append(f"{src} exists again; {dst} left where it is")
                continue
            src.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(dst), str(src))
        elif op == "copy":
            if not dst.is_file():
                report.already_done += 1
                continue
            if src.is_file() and src.stat().st_size != dst.stat().st_size:
                report.skipped.append(f"{dst} differs from {src}; the copy is kept")
                continue
            dst.unlink()
        elif op == "link":
            if not dst.is_symlink():
                report.already_done += 1
                continue
            if os.readlink(dst) != str(src):
                report.skipped.append(f"{dst} no longer links to {src}; kept")
                continue
            dst.unlink()
        else:
            report.skipped.append(f"unknown journal entry {entry}")
            continue
        report.done += 1
        _prune_empty_parents(dst.parent, stop_at=Path(entry.get("dest_root", dst.anchor)))
    return report


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Read a journal's complete entries.

    Raises:
        InputError: the journal is missing or a line is not a journal entry.

    """
    if not path.is_file():
        raise InputError(f"journal {path} does not exist")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"journal {path} line {number} is not valid JSON") from error
        if not isinstance(entry, dict) or not {"op", "src", "dst"} <= set(entry):
            raise InputError(f"journal {path} line {number} is not a journal entry")
        entries.append(entry)
    return entries


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _carry_out(op: str, src: Path, dst: Path) -> None:
    if op == "move":
        shutil.move(str(src), str(dst))
    elif op == "copy":
        shutil.copy2(src, dst, follow_symlinks=True)
    else:
        os.symlink(src, dst)


def _looks_done(op: str, src: Path, dst: Path) -> bool:
    if op == "move":
        return dst.exists() and not src.exists()
    if op == "link":
        return dst.is_symlink()
    return dst.is_file()


def _prune_empty_parents(folder: Path, stop_at: Path) -> None:
    current = folder
    while current != stop_at and current != current.parent:
        try:
            current.rmdir()  # only succeeds on an empty folder
        except OSError:
            return
        current = current.parent
