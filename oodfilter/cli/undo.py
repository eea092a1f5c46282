"""``oodfilter undo``: reverse the file actions recorded in a scan journal."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("undo")
@click.argument("journal", type=click.Path(dir_okay=False, path_type=Path))
def undo_command(journal: Path) -> None:
    """Put back every file that a scan moved, and remove the copies and links it made (JOURNAL).

    The journal is the `<manifest>.journal.jsonl` written beside the manifest. Each step checks the
    files first; anything changed since is left alone and reported.
    """
    from oodfilter.sinks.actions import undo_journal

    report = undo_journal(journal)
    click.echo(f"undone: {report.done}; already as before: {report.already_done}; left alone: {len(report.skipped)}")
    for problem in report.skipped:
        click.echo(f"left alone: {problem}", err=True)
