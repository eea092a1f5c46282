"""``oodfilter fit plp``: fit the PLP probe on unlabelled in-distribution images."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plp")
@click.option("--images", required=True, help="Unlabelled in-distribution images (folder or glob).")
@click.option("--classes", "-c", required=True, help="Class list file.")
@click.option("--model", "-m", default="ViT-B-16", show_default=True, help="Model (bundle, open_clip name, ...).")
@click.option("--pretrained", help="Pretrained tag or weights file for an open_clip name.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Also write the probe here.")
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per forward pass.")
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Cache root.")
@click.option("--overwrite", is_flag=True, help="Replace an existing probe file at --out.")
def fit_plp_command(images: str, classes: str, model: str, pretrained: str | None, out: Path | None, epochs: int,
                    batch_size: int, workers: int, cache_dir: Path | None, overwrite: bool) -> None:
    """Pseudo-label ID images by zero-shot argmax (5 templates) and train the PLP linear probe.

    The probe is cached for (model, class list), where the `plp` scorer finds it.
    """
    from oodfilter.data.discovery import discover_images
    from oodfilter.errors import InputError
    from oodfilter.outputs import check_output
    from oodfilter.scoring.checks import check_spec
    from oodfilter.scoring.spec import ScorerSpec
    from oodfilter_plp.templates import PLP_TEMPLATES

    # Every check that needs no model first, before torch is imported: output, images, class list, model.
    if out is not None:
        check_output(out, overwrite=overwrite, kind="PLP probe", is_expected_kind=_is_probe_file, inputs=[classes])
    spec = ScorerSpec(model=model, classes=classes, pretrained=pretrained, method="msp", templates=list(PLP_TEMPLATES),
                      batch_size=batch_size, cache_dir=str(cache_dir) if cache_dir is not None else None)
    if workers < 0:
        raise InputError(f"--workers must be 0 or more, got {workers}")
    if epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {epochs}")
    found = discover_images([images])
    paths = [item.name for item in found]
    readable = sum(item.error is None for item in found)
    if readable < 2:
        raise InputError(f"PLP needs at least two ID images to fit its probe, and {images} holds {readable}")
    check_spec(spec)
    from oodfilter.data.loader import encode_image_files
    from oodfilter.scoring.factory import build_scorer
    from oodfilter_plp.probe import probe_cache_path
    from oodfilter_plp.scorer import fit_plp

    scorer = build_scorer(spec)
    encoded = encode_image_files(scorer.encode_images, scorer.model.preprocess, paths, batch_size=batch_size,
                                 workers=workers)
    probe = fit_plp(scorer.model, scorer.class_vectors, encoded.features, epochs=epochs)
    names = scorer.class_vectors.class_names
    cached = probe.save(probe_cache_path(scorer.model.text_fingerprint("yes"), list(names), cache_dir))
    if out is not None:
        probe.save(out)
    click.echo(f"PLP probe on {len(encoded.paths)} images ({len(encoded.errors)} unreadable); agreement with "
               f"pseudo-labels {probe.pseudo_label_accuracy:.3f}; saved to {out or cached}")


def _is_probe_file(path: Path) -> bool:
    """Whether ``path`` is a probe of ours (only then may --overwrite replace it); reads it with torch."""
    from oodfilter_plp.probe import is_probe_file

    return is_probe_file(path)
