"""``oodfilter undo``: reverse the file actions recorded in a scan journal."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_REFUSED = 3


@click.command("undo")
@click.argument("journal", type=click.Path(dir_okay=False, path_type=Path))
def undo_command(journal: Path) -> None:
    """Put back every file that a scan moved, and remove the copies and links it made (JOURNAL).

    The journal is the `<manifest>.journal.jsonl` written beside the manifest; it must verify under your
    own journal key (in your state folder), so only journals your scans wrote are acted on, and files go
    back only into folders the scan read. Each step checks the files first: a file is removed or moved back
    only while it holds exactly the bytes the scan wrote, inside the scan's destination folder, reached
    without a symbolic link, and (for a copy) while its original is still there and identical. Anything
    else is refused, listed, and left untouched; the exit status is then 3. A last journal line cut short
    mid-line (a kill, a truncated copy) is reported, naming it, with exit status 3 too: the complete lines are
    still undone. Running undo again finishes an undo that was interrupted.
    """
    from oodfilter.sinks.names import printable
    from oodfilter.sinks.undo import undo_journal

    report = undo_journal(journal)
    click.echo(f"undone: {report.done}; already as before: {report.already_done}; refused: {len(report.skipped)}")
    for problem in report.skipped:
        click.echo(f"  {printable(problem)}", err=True)  # a name that is not UTF-8: its odd bytes as \\xNN
    if report.skipped:
        sys.exit(EXIT_REFUSED)
