"""``oodfilter robustness``: how well each method filters OOD images an attacker has perturbed."""

from __future__ import annotations

import functools
from typing import Any

import click

from oodfilter.cli.options import config_option, explicit_options, model_options

ROBUSTNESS_CONFIG = "oodfilter.evaluate.robustness_config:RobustnessConfig"
option = functools.partial(config_option, ROBUSTNESS_CONFIG)


@click.command("robustness")
@option("--classes", "-c", help="Class list file (one in-distribution class per line).")
@option("--id", "id_", field="id", help="In-distribution images: folder, glob, URL or scan manifest.")
@option("--ood", help="OOD images to manipulate: folder, glob, URL or scan manifest.")
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

    overrides = explicit_options(ctx, options, skip=("config_file",))
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

    report = robustness(config, progress=lambda line: click.echo(line, err=True), checked=checked)
    click.echo(markdown_table(report))
    for name, reason in report.skipped.items():
        click.echo(f"skipped {name}: {reason}")
    if report.errors:
        click.echo(f"{len(report.errors)} images could not be decoded and were left out")
