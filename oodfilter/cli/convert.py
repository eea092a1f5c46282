"""``oodfilter convert-clipn``: turn a reference CLIPN release checkpoint into a bundle."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("convert-clipn")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option(
    "--arch",
    default="ViT-B-16",
    show_default=True,
    help="Architecture the checkpoint was trained with: an open_clip model name (ViT-B-16, ViT-B-32, ViT-L-14, ...; "
    "see open_clip.list_models()) or local-dir:/path, a folder holding an open_clip_config.json for any other.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace OUT_DIR if it holds a bundle and nothing else; a file or other files are never replaced.",
)
def convert_clipn(checkpoint: Path, out_dir: Path, arch: str, overwrite: bool) -> None:
    """Convert a reference CLIPN CHECKPOINT (.pt) into a bundle folder OUT_DIR.

    The checkpoint is read with weights_only=True and every key must match ARCH; the bundle then loads
    with `--model OUT_DIR` (or oodfilter.load_model) without the network. An existing OUT_DIR is refused
    unless it is empty, or holds a bundle and --overwrite is given.
    """
    from oodfilter.model.file_checks import check_bundle_destination, check_checkpoint_file

    check_bundle_destination(out_dir, overwrite=overwrite)  # both before torch is imported
    check_checkpoint_file(checkpoint)
    from oodfilter.model.convert import convert_reference_checkpoint

    bundle = convert_reference_checkpoint(checkpoint, out_dir, architecture=arch, overwrite=overwrite)
    click.echo(f"wrote bundle {bundle}")
