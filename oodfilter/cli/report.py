"""``oodfilter report``: turn a scan manifest into one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="HTML file (MANIFEST.html).")
@click.option("--per-gallery", type=int, default=24, show_default=True, help="Thumbnails per gallery.")
@click.option("--grid", type=click.IntRange(min=0), default=500, show_default=True,
              help="Images in the browsable grid (a larger scan shows every k-th image).")
@click.option("--overwrite", is_flag=True, help="Replace an existing HTML report at --out.")
def report_command(manifest: Path, out: Path | None, per_gallery: int, grid: int, overwrite: bool) -> None:
    """Write an HTML report of a scan manifest; it works offline, and is a review tool.

    The page shows a summary, the score histogram with the decision boundary, the most OOD of the flagged
    images, the flagged and kept images nearest the boundary, the most in-distribution of the kept ones, a
    browsable grid, per-class counts and errors. In the page: a threshold slider with live counts, a class
    filter, sorting, keep/drop marks, and "Export review" (a file for `oodfilter apply --review`).
    """
    from oodfilter.report import ReportConfig, write_report
    from oodfilter.sinks.names import printable

    target = write_report(manifest, out or manifest.with_name(manifest.name + ".html"),
                          ReportConfig(per_gallery=per_gallery, grid=grid), overwrite=overwrite)
    click.echo(printable(f"wrote {target}"))
