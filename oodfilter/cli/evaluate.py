"""``oodfilter eval``: compare score methods on your ID and OOD images."""

from __future__ import annotations

import functools
from typing import Any

import click

from oodfilter.cli.options import config_option, explicit_options, model_options, quiet_asked

EVAL_CONFIG = "oodfilter.evaluate.config:EvalConfig"
option = functools.partial(config_option, EVAL_CONFIG)


@click.command("eval")
@option("--classes", "-c", needed=True, help="Class list file (one in-distribution class per line).")
@option("--id", "id_", field="id", needed=True, help="In-distribution images: folder, glob, or scan manifest.")
@option("--ood", multiple=True, needed=True, help="An OOD image set (folder, glob or manifest); repeat for several.")
@option("--id-labels", help="TSV/CSV of file and class_index or class_name, for ID top-1 accuracy.")
@option("--methods", help="Comma-separated score methods (default: all that can run).")
@option("--reference", multiple=True, help="Known in-distribution images (not the --id set) the fitted methods "
        "(knn, mahalanobis) fit on: files, folders, globs, or a manifest with stored features; repeatable.")
@model_options(EVAL_CONFIG)
@option("--out", "-o", help="results.json to write (histogram PNGs go beside it).")
@option("--overwrite", is_flag=True, help="Replace existing results (and their histograms) at --out.")
@option("--templates", help="Prompt template set: auto (clipn for CLIPN models, else photo), clipn (the "
        "reference's captions, quotes included), clipn-clean (the same without quotes), photo, ensemble ({default}).")
@option("--workers", help="Decoding worker processes ({default}).")
@option("--cache-dir", help="Cache folder for text vectors and prepared scorers.")
@option("--fpr-convention", type=click.Choice(["clipn", "openood"]), help="FPR95 definition ({default}).")
@option("--attack-eps", type=str, help="Also attack each OOD set (feature attack, see 'oodfilter robustness') at "
        "these comma-separated L-infinity budgets in 8-bit levels, e.g. 0,2,4,8; results.json gets a robustness "
        "section.")
@option("--attack-steps", help="PGD steps of --attack-eps ({default}).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of option defaults.")
@click.pass_context
def eval_command(ctx: click.Context, **options: Any) -> None:
    """Measure AUROC, FPR95, AUPR-In and AUPR-Out of score methods, ID vs each OOD set.

    All methods share one pass of image features. FPR95 (clipn convention): the share of OOD images
    accepted at the threshold that keeps 95% of the ID images; openood: the share of ID images rejected
    at the threshold that catches 95% of the OOD images.
    """
    from oodfilter.evaluate.checks import check_eval
    from oodfilter.evaluate.config import load_eval_config

    overrides = explicit_options(ctx, options, skip=("config_file",))
    if "id_" in overrides:
        overrides["id"] = overrides.pop("id_")
    for name in ("ood", "reference"):
        if name in overrides:
            overrides[name] = list(overrides[name])
    if "methods" in overrides:
        overrides["methods"] = [m.strip() for m in overrides["methods"].split(",") if m.strip()]
    if "attack_eps" in overrides:
        try:
            overrides["attack_eps"] = [float(e) for e in overrides["attack_eps"].split(",") if e.strip()]
        except ValueError as error:
            raise click.BadParameter(f"--attack-eps takes numbers separated by commas ({error})") from error
    config = load_eval_config(options["config_file"], overrides)
    checked = check_eval(config)  # every check that needs no model, before torch is imported
    from oodfilter.cli.progress import TaskProgress
    from oodfilter.evaluate.runner import evaluate

    with TaskProgress("evaluating", quiet=quiet_asked()) as display, display.encodes():  # shows the caption encodes
        report = evaluate(config, checked=checked)
    _print(report)


def _print(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for set_name in [*report.sets, "average"]:
        table = Table(title=f"ID vs {set_name}" if set_name != "average" else "average over OOD sets")
        for column in ("method", "AUROC", f"FPR95 ({report.fpr_convention})", "AUPR-In", "AUPR-Out"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for method in report.methods:
            row = report.results[method][set_name]
            table.add_row(method, *(f"{100 * row[k]:.2f}" for k in ("auroc", "fpr95", "aupr_in", "aupr_out")))
        console.print(table)
    if report.id_accuracy is not None:
        console.print(f"ID top-1 accuracy of the yes-branch classifier: {100 * report.id_accuracy:.2f}%")
    for method, reason in report.skipped.items():
        console.print(f"skipped {method}: {reason}")
    if report.errors:
        console.print(f"{len(report.errors)} images could not be decoded and were left out")
    for set_name, section in report.robustness.items():
        rows = [r for r in section["rows"] if r["objective"] == "feature"]
        table = Table(title=f"ID vs manipulated {set_name} (feature attack, {section['steps']} PGD steps): AUROC")
        budgets = sorted({r["eps"] for r in rows})
        for column in ("method", *(f"eps {e:g}/255" for e in budgets)):
            table.add_column(column, justify="left" if column == "method" else "right")
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = {r["eps"]: f"{100 * r['auroc']:.2f}" for r in rows if r["method"] == method}
            table.add_row(method, *(cells.get(e, "-") for e in budgets))
        console.print(table)
