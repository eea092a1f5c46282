"""``oodfilter robustness``: how well each method filters OOD images an attacker has perturbed."""

from __future__ import annotations

import functools
from typing import Any

import click

from oodfilter.cli.options import config_option, explicit_options, model_options, quiet_asked

ROBUSTNESS_CONFIG = "oodfilter.evaluate.robustness_config:RobustnessConfig"
option = functools.partial(config_option, ROBUSTNESS_CONFIG)


@click.command("robustness")
@option("--classes", "-c", needed=True, help="Class list file (one in-distribution class per line).")
@option("--id", "id_", field="id", needed=True, help="In-distribution images: folder, glob, URL or scan manifest.")
@option("--ood", needed=True, help="OOD images to manipulate: folder, glob, URL or scan manifest.")
@option("--methods", type=str, help="Comma-separated score methods (default: all that can run).")
@option("--eps", type=str, help="Comma-separated L-infinity budgets in 8-bit levels, e.g. 0,1,2,4,8 (= k/255).")
@option("--steps", help="PGD steps per attack, after a random start ({default}).")
@option("--step-size", help="PGD step in 8-bit levels (default 2.5 * eps / steps).")
@option("--objectives", type=str, help="Comma-separated: feature (towards an ID feature; every method scores the same "
        "images) and/or score (each method's own score, white-box) ({default}).")
@option("--target", type=click.Choice(["image", "text"]), help="Feature attack target: a random ID image's "
        "feature, or a random ID class's text vector ({default}).")
@option("--id-recall", help="Share of ID images the calibrated threshold keeps, for the success rate ({default}).")
@option("--limit", help="Attack at most N OOD images (the first N).")
@option("--seed", help="Seed of the random starts and targets ({default}).")
@model_options(ROBUSTNESS_CONFIG)
@option("--templates", help="Prompt template set ({default}).")
@option("--cache-dir", help="Cache folder for text vectors and prepared scorers.")
@option("--out", "-o", help="Folder for robustness.json, the manipulated PNGs (images.jsonl) and the plots.")
@option("--overwrite", is_flag=True, help="Replace the results in --out.")
@click.option("--markdown", is_flag=True, help="Print the results as one Markdown table (for notes and issues) "
              "instead of a table per objective.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of option defaults.")
@click.pass_context
def robustness_command(ctx: click.Context, **options: Any) -> None:
    """Perturb OOD images within an L-infinity budget to pass as in-distribution, and measure every method.

    For each objective, method and budget: AUROC and FPR95 of the ID images against the manipulated OOD
    images, the share of manipulated images each method accepts (calibrated threshold; own rule for
    CTW/ATD), and the perturbation actually applied. Budget 0 is the clean result. The attack runs in
    float32 on the model's resized and cropped pixels; the manipulated images are saved as PNGs that
    'oodfilter scan' scores exactly as measured.
    """
    from oodfilter.evaluate.checks import check_robustness
    from oodfilter.evaluate.robustness_config import load_robustness_config

    overrides = explicit_options(ctx, options, skip=("config_file", "markdown"))
    if "id_" in overrides:
        overrides["id"] = overrides.pop("id_")
    for name in ("methods", "objectives"):
        if name in overrides:
            overrides[name] = [m.strip() for m in overrides[name].split(",") if m.strip()]
    if "eps" in overrides:
        try:
            overrides["eps"] = [float(e) for e in overrides["eps"].split(",") if e.strip()]
        except ValueError as error:
            raise click.BadParameter(f"--eps takes numbers separated by commas ({error})") from error
    config = load_robustness_config(options["config_file"], overrides)
    checked = check_robustness(config)  # every check that needs no model, before torch is imported
    from oodfilter.evaluate.robustness import markdown_table, robustness

    quiet = quiet_asked()  # `oodfilter -q robustness`: the results only
    report = robustness(config, progress=lambda line: None if quiet else click.echo(line, err=True), checked=checked)
    if options["markdown"]:
        click.echo(markdown_table(report))
    else:
        _print_tables(report)
    for name, reason in report.skipped.items():
        click.echo(f"skipped {name}: {reason}")
    if report.errors:
        click.echo(f"{len(report.errors)} images could not be decoded and were left out")


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}"


def _print_tables(report: Any) -> None:
    """Print one rich table per attack objective: each method at each budget."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for objective in dict.fromkeys(row.objective for row in report.rows):
        table = Table(title=f"{objective} attack on {report.ood_images} OOD images (vs {report.id_images} ID): "
                      "AUROC and FPR95 in %, accepted = share of manipulated images passed as ID")
        for column in ("method", "eps (/255)", "AUROC", "FPR95", "accepted (calibrated)", "accepted (own rule)",
                       "mean L∞ (/255)", "mean L2 (/255)"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for row in (r for r in report.rows if r.objective == objective):
            table.add_row(row.method, f"{row.eps:g}", f"{100 * row.auroc:.2f}", f"{100 * row.fpr95:.2f}",
                          _percent(row.accepted_calibrated), _percent(row.accepted_own_rule),
                          f"{255 * row.mean_linf:.2f}", f"{255 * row.mean_l2:.1f}")
        console.print(table)
