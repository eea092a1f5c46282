"""Reverse a file-action journal, trusting neither the journal nor the files.

The whole journal is checked first (schema and types; a malformed one is refused before anything is
touched). Each entry is then refused, with its reason, unless it and its run's header verify under the
user's own journal key (this user's oodfilter wrote them), its ``dst`` lies inside its destination root
and its ``src`` below a folder the scan read, no folder between the root and the file is a symbolic
link, and the files are exactly what the scan left:

- a copy (or link) is removed only while it holds the bytes the scan wrote (is a link to the same
  target) and its original is still present and identical (for a link: present);
- a move is put back only while the moved file holds the bytes the scan moved and its original place
  is free; the way back is a hard link then an unlink, or across file systems a copy to a temporary
  file, fsync, verify, rename, and only then removal of the moved file.

Entries already undone (or never carried out, after a kill) are recognised and counted, so a second
undo finishes what a killed one began. Folders are pruned only when empty and strictly inside the root.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from oodfilter.sinks.action_report import ActionReport
from oodfilter.sinks.file_ops import move_at, os_failure
from oodfilter.sinks.journal import JournalEntry, entry_problem, read_journal, torn_tail, trust_problem
from oodfilter.sinks.safe_paths import (
    At,
    FileActionError,
    Fingerprint,
    fingerprint_at,
    folder_inside,
    lstat_at,
    remove_at,
    temp_name,
    user_folder,
)
from oodfilter.sinks.user_key import journal_key

_RETRY = "run 'oodfilter undo' on the same journal again"


class RefusedError(Exception):
    """An entry undo will not act on; the message says why."""


def undo_journal(journal: str | Path) -> ActionReport:
    """Reverse every entry of ``journal``, newest first, refusing any whose files are not as the scan left them.

    Returns:
        The counts: ``done`` (restored or removed), ``already_done`` (nothing left to undo) and
        ``skipped``, one "path: reason" message per refused entry (and, first, one naming the journal's
        last line when it is torn mid-line: its action, if it ran, could not be undone).

    Raises:
        InputError: the journal is missing or malformed, or of an older version (then nothing at all is
            touched).
        JournalKeyError: the user's journal key could be read or replaced by others (nothing is touched).

    """
    entries = read_journal(Path(journal))
    key = journal_key(create=False)
    report = ActionReport()
    torn = torn_tail(Path(journal))
    if torn is not None:  # the complete entries are still undone; the torn line is reported, never passed over
        report.skipped.append(torn)
    for entry in reversed(entries):
        try:
            problem = entry_problem(entry) or trust_problem(entry, key)
            if problem is not None:
                raise RefusedError(f"refused: {problem}; nothing touched")
            acted = _undo_entry(entry)
        except (RefusedError, FileActionError) as reason:
            report.skipped.append(f"{entry.dst}: {reason}")
            continue
        except OSError as error:
            report.skipped.append(f"{entry.dst}: {os_failure(error, f'undo the {entry.op} of {entry.src}', _RETRY)}")
            continue
        report.done += acted
        report.already_done += not acted
        _prune(entry)
    return report


def _undo_entry(entry: JournalEntry) -> bool:
    """Undo one entry; True when something was restored or removed, False when nothing was left to do."""
    with ExitStack() as stack:
        try:
            folder: int | None = stack.enter_context(folder_inside(entry.dest_root, entry.dst.parent))
        except FileNotFoundError:
            folder = None
        dst = None if folder is None else At(folder, entry.dst.name, entry.dst)
        if dst is not None:
            _drop_temp(dst, entry)
        now = None if dst is None else fingerprint_at(dst)
        if entry.op == "move":
            return _undo_move(entry, dst, now)
        return _undo_copy_or_link(entry, dst, now)


def _undo_copy_or_link(entry: JournalEntry, dst: At | None, now: Fingerprint | None) -> bool:
    what = "copy" if entry.op == "copy" else "link"
    if dst is None or now is None:
        return False
    if now != entry.result:
        raise RefusedError(f"refused: it is no longer the {what} the scan made ({_how(now)}); kept")
    original = _original(entry.src, follow=True) if entry.op == "copy" else _present(entry.src)
    if original is None:
        raise RefusedError(f"refused: its original {entry.src} is missing, so the {what} is kept")
    if original != entry.result:
        raise RefusedError(f"refused: its original {entry.src} changed since the scan, so this copy is kept")
    remove_at(dst)
    return True


def _undo_move(entry: JournalEntry, dst: At | None, now: Fingerprint | None) -> bool:
    if dst is None or now is None:  # nothing here to put back; the original place need not be read
        if _original(entry.src, follow=False, entry=entry, read=False) is not None:
            return False
        raise RefusedError(f"refused: it is gone and nothing is at its original place {entry.src}; nothing to restore")
    if now != entry.result:
        raise RefusedError(
            f"refused: it is no longer the file the scan moved here from {entry.src} ({_how(now)}); kept"
        )
    original = _original(entry.src, follow=False, entry=entry)
    if original is not None:
        if original != entry.result:
            raise RefusedError(f"refused: {entry.src} exists again with other content; both kept")
        remove_at(dst)  # a half-finished move (or restore): the original place already holds it
        return True
    with user_folder(entry.src.parent, create=True) as folder:
        move_at(dst, At(folder, entry.src.name, entry.src), entry.token, entry.result)
    return True


def _original(src: Path, follow: bool, entry: JournalEntry | None = None, read: bool = True) -> Fingerprint | None:
    """Fingerprint the original place (None if empty; without ``read``, only whether something is there).

    For a move (``entry`` given) a temporary file a killed restore left beside it is removed first.
    """
    try:
        with user_folder(src.parent) as folder:
            if entry is not None:
                _drop_temp(At(folder, src.name, src), entry)
            if not read:
                return None if lstat_at(At(folder, src.name, src)) is None else Fingerprint("other", "")
            return fingerprint_at(At(folder, src.name, src), follow=follow)
    except FileNotFoundError:
        return None


def _how(now: Fingerprint) -> str:
    if now.kind == "symlink":
        return f"it is now a symbolic link to {now.value}"
    return "it is now a folder or device" if now.kind == "other" else "its bytes changed since"


def _present(src: Path) -> Fingerprint | None:
    """Return a link entry's fingerprint when its original is there (removing the link then loses nothing)."""
    return Fingerprint("symlink", str(src)) if os.path.exists(src) else None


def _drop_temp(beside: At, entry: JournalEntry) -> None:
    """Remove the temporary file a killed action or undo left next to ``beside`` (its name is journaled)."""
    name = temp_name(beside.name, entry.token)
    tmp = At(beside.folder, name, beside.path.with_name(name))
    if lstat_at(tmp) is not None:
        remove_at(tmp)


def _prune(entry: JournalEntry) -> None:
    """Remove the now-empty folders between ``dst`` and the root (never the root nor above it)."""
    parts = entry.dst.parent.relative_to(entry.dest_root).parts
    for depth in range(len(parts), 0, -1):
        parent = entry.dest_root.joinpath(*parts[: depth - 1])
        try:
            with folder_inside(entry.dest_root, parent) as handle:
                os.rmdir(parts[depth - 1], dir_fd=handle)
        except (OSError, FileActionError):
            return
