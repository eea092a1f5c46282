"""``oodfilter apply``: a new decision and file action for a scanned manifest, without scoring anything again."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from oodfilter.scan.apply_config import APPLY_ACTIONS  # torch-free: --help must not load torch


@click.command("apply")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--out", "-o", default=None, help="The new manifest (default: <manifest stem>.applied<suffix> beside "
              "MANIFEST); never replaced without --overwrite.")
@click.option("--threshold", type=float, default=None, help="Decide OOD as ood_score > X.")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None, help="Decide with a saved calibration "
              "(JSON); it must be fitted on this manifest's model, class list, templates and method.")
@click.option("--keep-fraction", type=float, default=None, help="Keep the F lowest-scored (most in-distribution) ok "
              "rows; the rest are OOD.")
@click.option("--id-recall", type=float, default=None, help="Calibrate the threshold to keep this share R of the "
              "--calibrate-on rows.")
@click.option("--calibrate-on", multiple=True, help="A manifest of images known to be in-distribution, scanned with "
              "the same model, class list, templates and method (repeatable); its scores are read, nothing is scored.")
@click.option("--review", type=click.Path(dir_okay=False), default=None, help="A review file exported by the report: "
              "'drop' marks are OOD, 'keep' marks in-distribution, and its threshold (if moved) decides the rest.")
@click.option("--only-marked", is_flag=True, help="With --review: decide only the marked rows; the others get no "
              "decision and are left alone, so the action takes exactly the marked files.")
@click.option("--action", type=click.Choice(APPLY_ACTIONS), default="tag", show_default=True, help="tag: only the new "
              "manifest; move, copy, link: the selected files into --dest (journaled, 'oodfilter undo' reverses); "
              "reshard: shards without the selected samples into --dest; list: print the selected paths.")
@click.option("--select", type=click.Choice(["ood", "id"]), default="ood", show_default=True,
              help="Which rows the action takes.")
@click.option("--dest", type=click.Path(file_okay=False), default=None, help="Folder for move/copy/link/reshard "
              "(paths below the scanned folders kept).")
@click.option("--dry-run", is_flag=True, help="Print what would be done; write nothing (no manifest, journal or "
              "folder).")
@click.option("--overwrite", is_flag=True, help="Replace an existing manifest of ours at --out.")
@click.option("--quiet", "-q", is_flag=True, help="No summary.")
def apply_command(manifest: str, quiet: bool, **options: Any) -> None:
    """Apply a decision and an action to MANIFEST, from its stored scores: no model, no image is read.

    Each ok row is decided by the --review mark, else the review's threshold, else --threshold,
    --calibration, --id-recall or --keep-fraction, else the decision MANIFEST holds (with --only-marked:
    the marks alone; the other rows get no decision and no action takes them). Error rows stay as
    they are; a file modified (a later mtime) or deleted since the scan becomes an
    error row and is not acted on. The new manifest's meta says what decided (applied_from, the review's
    sha256). Nothing is overwritten, only files below the folders the scan read are acted on, files go only
    to --dest outside them, and a dry run writes nothing.
    """
    from oodfilter.scan.apply import run_apply
    from oodfilter.scan.apply_config import ApplyConfig
    from oodfilter.sinks.names import name_bytes, printable

    options["calibrate_on"] = list(options["calibrate_on"])
    summary = run_apply(ApplyConfig(manifest=manifest, **options))
    if summary.dry_run:
        for action in summary.planned:
            click.echo(printable(f"would {action.op} {action.source} -> {action.destination}"))
    if options["action"] == "list":
        for path in summary.selected:  # the names' own bytes, one per line, for xargs -d '\n'
            sys.stdout.buffer.write(name_bytes(path) + b"\n")
        sys.stdout.buffer.flush()
    if not quiet:
        _print_summary(summary, options["action"], options["select"])


def _print_summary(summary: Any, action: str, select: str) -> None:
    from oodfilter.sinks.names import printable

    def say(text: str) -> None:
        click.echo(printable(text), err=True)

    verb = "would write" if summary.dry_run else "wrote"
    undecided = summary.ok - summary.ood - summary.in_distribution
    counts = f"{summary.ood} OOD, {summary.in_distribution} in-distribution"
    if undecided:
        counts += f", {undecided} no decision"
    say(f"{verb} {Path(summary.manifest)}: {summary.total} rows, {counts}, {summary.errors} errors "
        f"(decided by: {summary.decision or 'nothing'})")
    if summary.changed:
        say(f"{len(summary.changed)} files changed since the scan are error rows and were not acted on "
            f"(first: {summary.changed[0]}); scan them again")
    if summary.missing:
        say(f"{len(summary.missing)} files missing since the scan are error rows and were not acted on "
            f"(first: {summary.missing[0]})")
    if summary.ignored_marks:
        say(f"{len(summary.ignored_marks)} review marks are on error rows and were ignored "
            f"(first: {summary.ignored_marks[0]})")
    if summary.actions is not None:
        say(f"{action}: {summary.actions.done + summary.actions.already_done} files; skipped: "
            f"{len(summary.actions.skipped)}")
        for problem in summary.actions.skipped:
            say(f"skipped: {problem}")
        if summary.actions.done:
            from oodfilter.sinks.manifest import sidecar

            say(f"to reverse it: oodfilter undo {sidecar(Path(summary.manifest), 'journal.jsonl')}")
    if summary.resharded is not None:
        done = summary.resharded
        say(f"{'wrote' if done.written else 'would write'} {done.kept} samples to {len(done.shards)} shard(s); left "
            f"out {done.dropped_selected} selected and {done.dropped_errors} unreadable")
    if action in ("tag", "list"):
        say(f"selected (--select {select}): {len(summary.selected)}")
