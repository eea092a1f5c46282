"""``oodfilter export-features``: a scan's stored image features in clip-retrieval's layout."""

from __future__ import annotations

import click


@click.command("export-features")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--shard-rows", type=int, default=1_000_000, help="Embeddings per .npy shard.")
def export_features_command(manifest: str, folder: str, shard_rows: int) -> None:
    """Write MANIFEST's stored features (scan --save-features) to FOLDER in clip-retrieval's layout.

    That is img_emb/img_emb_<i>.npy (float16) and metadata/metadata_<i>.parquet (image_path), the layout
    clip-retrieval and DataComp tools read.
    """
    from oodfilter.sinks.clip_retrieval import export_manifest_features

    shards = export_manifest_features(manifest, folder, shard_rows=shard_rows)
    click.echo(f"wrote {len(shards)} shard(s) to {folder}", err=True)
