"""``oodfilter rescore``: a new class list, method or rule for a scan, from its stored image features."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oodfilter.cli.options import quiet_asked

if TYPE_CHECKING:
    from oodfilter.scoring.adapt_config import AdaptConfig


@click.command("rescore")
@click.argument("manifest", type=click.Path(dir_okay=False), required=False, default="")
@click.option("--clip-retrieval", type=click.Path(file_okay=False), default=None, help="Instead of MANIFEST: "
              "embeddings in clip-retrieval's layout (img_emb/*.npy + metadata/*.parquet); needs --model.")
@click.option("--classes", "-c", required=True, help="The new class-list file (one class per line).")
@click.option("--out", "-o", required=True, help="The new manifest (.jsonl, .csv, .parquet).")
@click.option("--model", "-m", default=None, help="The model (default: the one the features were stored with; "
              "its image tower must match them).")
@click.option("--pretrained", default=None, help="For an open_clip name: a pretrained tag or weights file.")
@click.option("--method", default=None, help="Score method (as for scan).")
@click.option("--templates", default=None, help="Prompt template set (as for scan).")
@click.option("--threshold", type=float, default=None, help="Decide OOD as ood_score > X.")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None, help="Decide with a saved calibration.")
@click.option("--keep-fraction", type=float, default=None, help="Keep the F most in-distribution images.")
@click.option("--id-recall", type=float, default=None, help="Calibrate the threshold to keep this share of the "
              "--calibrate-on images.")
@click.option("--calibrate-on", multiple=True, help="Known in-distribution images (files, folders, globs, or a "
              "manifest; one with stored features of the same image tower is read, not re-encoded).")
@click.option("--reference", multiple=True, help="Known in-distribution images the fitted methods (knn, "
              "mahalanobis) fit on: files, folders, globs, or a manifest (one with stored features of the same "
              "image tower is read, not re-encoded); repeatable.")
@click.option("--device", default="auto", help="Where the text encoder and the scoring run.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Text-vector cache folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing manifest of ours at --out.")
@click.option("--adapt", is_flag=True, help="Dataset-aware pass: score every image also against negative proxies "
              "(clusters of the images the method rates most confidently OOD) and positive proxies (confident ID "
              "images per class) built from this scan. Decide with --threshold, --keep-fraction or --id-recall.")
@click.option("--adapt-negatives", type=int, default=None, help="With --adapt: at most this many negative proxies "
              "(default 32).")
@click.option("--adapt-fraction", type=float, default=None, help="With --adapt: at most this share of the scan "
              "seeds the negative proxies (default 0.02).")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary.")
def rescore_command(manifest: str, quiet: bool, adapt: bool, adapt_negatives: int | None,
                    adapt_fraction: float | None, **options: Any) -> None:
    """Score MANIFEST's stored image features (scan --save-features) against a new class list or method.

    No image is opened and the image encoder does not run; the features are refused unless the model's
    image tower is the one they were stored with (for --clip-retrieval input, only the dimension can be
    checked).
    """
    from oodfilter.scan.rescore_checks import RescoreConfig, check_rescore

    quiet = quiet_asked(quiet)  # also `oodfilter -q rescore`

    given = {key: value for key, value in options.items() if value is not None and value != ()}
    for name in ("calibrate_on", "reference"):
        if name in given:
            given[name] = list(given[name])
    config = RescoreConfig(manifest=manifest, adapt=_adapt_config(adapt, adapt_negatives, adapt_fraction), **given)
    checked = check_rescore(config)  # every check that needs no model, before torch is imported
    from oodfilter.cli.progress import TaskProgress
    from oodfilter.scan.rescore import rescore

    with TaskProgress("rescoring", quiet=quiet) as display, display.encodes():  # shows the caption encodes
        summary = rescore(config, checked=checked)
    if not quiet:
        outcome = f"{summary.ood} OOD, {summary.in_distribution} in-distribution"
        if summary.undecided == summary.ok and summary.ok:  # as scan says it: no rule decided, so no count of OOD
            outcome = f"no decision for {summary.ok} (pass --threshold, --calibration or --keep-fraction)"
        elif summary.undecided:
            outcome += f", {summary.undecided} no decision"
        click.echo(f"rescored {summary.ok} of {summary.total} rows ({summary.method}) in {summary.seconds:.1f} s: "
                   f"{outcome} -> {Path(summary.manifest)}", err=True)


def _adapt_config(adapt: bool, negatives: int | None, fraction: float | None) -> AdaptConfig | None:
    """Return the ``--adapt`` settings (None without ``--adapt``); its options alone are refused."""
    from oodfilter.errors import InputError
    from oodfilter.scoring.adapt_config import AdaptConfig

    if not adapt:
        if negatives is not None or fraction is not None:
            raise InputError("--adapt-negatives and --adapt-fraction set the --adapt pass: add --adapt")
        return None
    defaults = AdaptConfig()
    return AdaptConfig(negatives=defaults.negatives if negatives is None else negatives,
                       negative_fraction=defaults.negative_fraction if fraction is None else fraction)
