"""``oodfilter scan``: score image files and write a manifest; optionally move, copy or link them."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import click

from oodfilter.cli.options import config_option, explicit_options, model_options, quiet_asked
from oodfilter.sinks.actions import ACTIONS  # torch-free imports: --help must not load torch
from oodfilter.sinks.reshard import RESHARD

EXIT_INPUTS_FAILED = 3

SCAN_CONFIG = "oodfilter.scan.config:ScanConfig"
option = functools.partial(config_option, SCAN_CONFIG)


@click.command("scan")
@click.argument("inputs", nargs=-1)
@option("--classes", "-c", help="Class list file: one in-distribution class name per line (this or "
        "--classes-from-folders is required).")
@option("--classes-from-folders", is_flag=True, help="Scan one folder laid out as FOLDER/CLASS/IMAGE: the class "
        "list is its sub-folder names (underscores and hyphens read as spaces), and each image whose folder's class "
        "differs from the class it confidently looks like is marked label_issue in the manifest.")
@option("--label-min-prob", help="With --classes-from-folders: the probability above which another class than the "
        "folder's counts as a label issue ({default}; from 0.5 that class is more likely than the folder's).")
@option("--out", "-o", help="Manifest file ({default}); format from the suffix: .jsonl, .csv, .parquet.")
@model_options(SCAN_CONFIG, model="A catalogue name ({default}: downloaded once, see 'oodfilter models'), a "
               "bundle folder, hf-hub:ORG/REPO[@REV], reference .pt, open_clip name (ViT-B-16), local-dir:/folder, "
               "or test-tiny.",
               pretrained="For an open_clip name: a pretrained tag or weights file. For a reference .pt: its "
               "architecture, an open_clip name (ViT-B-16) or local-dir:/folder with open_clip_config.json.")
@option("--method", help="Score: atd (default with a trained no-branch), ctw, mcm, msp, energy, maxlogit; knn or "
        "mahalanobis with --reference.")
@option("--threshold", help="Decide OOD as ood_score > X instead of the threshold-free rule.")
@option("--id-recall", help="Calibrate the threshold to keep this share R of the --calibrate-on images (0.95).")
@option("--calibrate-on", multiple=True, help="Images known to be in-distribution (files, folders, globs or a "
        "manifest; repeatable) for --id-recall; the fit is saved as <out>.calibration.json.")
@option("--calibration", type=click.Path(dir_okay=False), help="Use a saved calibration (JSON) for the decision.")
@option("--keep-fraction", help="Keep the F lowest-scored (most in-distribution) images of the scan, decided after "
        "scoring; the rest are OOD.")
@option("--reference", multiple=True, help="Known in-distribution images the fitted methods (knn, mahalanobis) fit on: "
        "files, folders, globs or a manifest (one with stored features of the same image tower is read, not "
        "re-encoded); repeatable.")
@option("--save-features", is_flag=True, help="Store each image's embedding (float16 rows in <out>.features.<id>.f16, "
        "described by <out>.features.json) so "
        "'oodfilter rescore' can score another class list or method without the image encoder.")
@option("--templates", help="Prompt template set: auto (clipn for CLIPN models, else photo), clipn (the "
        "reference's captions, quotes included), clipn-clean (the same without quotes), photo, ensemble ({default}).")
@option("--workers", help="Decoding worker processes (0 on 2 cores or fewer, else cores - 1, at most 8).")
@option("--include", multiple=True, help="Only paths matching this pattern (repeatable).")
@option("--exclude", multiple=True, help="Skip paths matching this pattern (repeatable).")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@option("--resume", is_flag=True, help="Continue an interrupted scan: score only inputs missing from --out.")
@option("--overwrite", is_flag=True, help="Replace an existing manifest.")
@option("--action", type=click.Choice((*ACTIONS, RESHARD)), help="What to do with selected files; reshard: write the "
        "input shards without the selected samples to --dest ({default}).")
@option("--select", type=click.Choice(["ood", "id"]), help="Which files the action takes ({default}).")
@option("--dest", type=click.Path(file_okay=False), help="Folder for move/copy/link (relative paths kept).")
@option("--dry-run", is_flag=True, help="Print the file actions instead of doing them.")
@option("--fast-decode/--no-fast-decode", is_flag=True, help="Decode large JPEGs reduced by 1/2-1/8 (never below "
        "twice the model's input size) before the model's resize: 4-6x faster on 12 MP photos, but 0.5-1.9% of "
        "decisions move at a calibrated threshold (README); off by default.")
@option("--cache-dir", type=click.Path(file_okay=False), help="Text-vector cache folder.")
@option("--engine", type=click.Choice(["local", "ray"]), help="Run here or on a Ray cluster ({default}).")
@option("--ray-address", help="Ray cluster address (default: start or join a local one).")
@option("--ray-actors", help="Scoring actors on Ray (default: one per GPU, else one).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of option defaults.")
@click.option("--strict", is_flag=True, help="Exit with code 3 if any input could not be read.")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary.")
@click.pass_context
def scan_command(ctx: click.Context, **options: Any) -> None:
    """Score the images in INPUTS (files, folders, quoted globs, URLs, WebDataset .tar shards) against a class list.

    Writes one manifest row per input (path, status, error, ood_score, is_ood, top_class, top_prob);
    higher scores are more OOD. Unreadable files become error rows and the scan goes on. URLs (s3://,
    gs://, hf://, https://, ...) are read through fsspec, credentials from the environment; a shard gives
    one row per sample, named SHARD#KEY. Nothing is deleted or overwritten: --action move|copy|link puts
    local files under --dest and records a journal that 'oodfilter undo' reverses; --action reshard writes
    new shards without the selected samples.
    """
    from oodfilter.scan.config import load_scan_config
    from oodfilter.scan.preflight import prepare_scan
    from oodfilter.sinks.names import printable

    options["quiet"] = quiet_asked(options["quiet"])  # also `oodfilter -q scan`
    overrides = _explicit_options(ctx, options)
    config = load_scan_config(options["config_file"], overrides)
    with prepare_scan(config) as prepared:  # every check that needs no model, before torch is imported
        from oodfilter.cli.progress import TaskProgress
        from oodfilter.scan.runner import scan

        with TaskProgress("scanning", quiet=options["quiet"]) as progress, progress.encodes():
            summary = scan(config, progress=progress, prepared=prepared)
    if not options["quiet"]:
        _print_summary(summary)
    if summary.planned:
        for action in summary.planned:
            click.echo(printable(f"would {action.op} {action.source} -> {action.destination}"))
    if options["strict"] and summary.errors:
        sys.exit(EXIT_INPUTS_FAILED)


def _explicit_options(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """Options the user typed, mapped onto ScanConfig fields."""
    overrides = explicit_options(ctx, options, skip=("config_file", "strict", "quiet"))
    if "no_recursive" in overrides:
        overrides["recursive"] = not overrides.pop("no_recursive")
    for name in ("inputs", "include", "exclude", "calibrate_on", "reference"):
        if name in overrides:
            overrides[name] = list(overrides[name])
            if not overrides[name]:
                del overrides[name]
    return overrides


def _print_summary(summary: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from oodfilter.sinks.names import printable

    table = Table(title=f"oodfilter scan ({summary.method})", show_header=False)
    table.add_row("inputs", str(summary.total))
    table.add_row("scored this run", str(summary.scanned))
    table.add_row("in-distribution", str(summary.in_distribution))
    table.add_row("OOD", str(summary.ood))
    undecided = summary.ok - summary.ood - summary.in_distribution
    if undecided:
        table.add_row("no decision (pass --threshold)", str(undecided))
    table.add_row("errors", str(summary.errors))
    if summary.decision:
        table.add_row("decision", summary.decision)
    if summary.threshold is not None:
        table.add_row("threshold", f"{summary.threshold:.6g}")
    table.add_row("throughput", f"{summary.images_per_second:.1f} files/s")
    table.add_row("manifest", printable(str(Path(summary.manifest))))
    if summary.actions is not None:
        table.add_row("files acted on", str(summary.actions.done + summary.actions.already_done))
        table.add_row("skipped actions", str(len(summary.actions.skipped)))
    if summary.resharded is not None:
        done = summary.resharded
        verb = "samples written" if done.written else "samples a reshard would write"
        table.add_row(verb, f"{done.kept} to {len(done.shards)} shard(s)")
        table.add_row("samples left out", f"{done.dropped_selected} selected, {done.dropped_errors} unreadable")
        unscanned = sum(shard.unscanned for shard in done.shards)
        if unscanned:
            table.add_row("samples kept unscanned (no image)", str(unscanned))
    console = Console(stderr=True)
    console.print(table)
    if summary.label_issues is not None:
        issues = summary.label_issues
        console.print(f"{issues} image{'' if issues == 1 else 's'} may be mislabelled (the folder's class differs from "
                      "the class the image confidently looks like: label_issue in the manifest, and the report's "
                      "Label issues section)" if issues else "no image looks mislabelled (label check of the folder "
                      "classes)", markup=False)
    _print_class_rates(console, summary.per_class)
    if summary.actions is not None:
        for problem in summary.actions.skipped:
            console.print(f"skipped: {printable(problem)}", markup=False)
    if summary.resharded is not None:
        for shard in summary.resharded.shards:
            if shard.damage:
                console.print(f"{shard.source}: {shard.damage}")


SHOWN_CLASSES = 10


def _print_class_rates(console: Any, rates: list[Any]) -> None:
    """Print the most frequent top classes with their flagged share, and the classes whose share stands out."""
    from rich.table import Table

    from oodfilter.report.class_rates import suspicious_note

    if not rates or not any(rate.decided for rate in rates):
        return
    table = Table(title=f"per top class ({min(len(rates), SHOWN_CLASSES)} of {len(rates)}, most images first)")
    for column in ("top class", "images", "flagged OOD", "share", "median score"):
        table.add_column(column)
    for rate in rates[:SHOWN_CLASSES]:
        share = "-" if rate.share is None else f"{rate.share:.0%}"
        table.add_row(rate.name, str(rate.images), str(rate.flagged), share, f"{rate.median_score:.4g}")
    console.print(table)
    note = suspicious_note(rates)
    if note:
        console.print(f"check: {note}")
