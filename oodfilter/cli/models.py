"""``oodfilter models`` and ``oodfilter download``: the catalogue of named weights and fetching them ahead of time."""

from __future__ import annotations

from pathlib import Path

import click

_CACHE_HELP = "Cache root (default: $OODFILTER_CACHE_DIR or the user's cache folder)."


@click.command("models")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=_CACHE_HELP)
def models_command(cache_dir: Path | None) -> None:
    """List the named models of the catalogue, where each is cached, and whether it is there.

    A name that is not cached is downloaded and converted on first use (or ahead of time with
    'oodfilter download NAME'); afterwards it loads from the cache without network. A file listed by
    $OODFILTER_CATALOGUE adds entries (a mirror, a private checkpoint).
    """
    from oodfilter.cache_dir import default_cache_dir
    from oodfilter.model.catalogue import load_catalogue
    from oodfilter.model.manifest import BUNDLE_MANIFEST
    from oodfilter.model.trust import expected_sha256

    root = cache_dir if cache_dir is not None else default_cache_dir()
    catalogue = load_catalogue()
    for name in sorted(catalogue.entries):
        entry = catalogue.entries[name]
        bundle = entry.bundle_dir(root)
        present = "cached" if (bundle / BUNDLE_MANIFEST).is_file() else "not cached"
        sha256, source = expected_sha256(entry, entry.folder(root))
        trust = f"sha256 {sha256[:16]}... from {source}" if sha256 else "sha256: trusted on first download"
        click.echo(f"{name}  {entry.architecture}  {present}: {bundle}")
        click.echo(f"    {entry.description}")
        click.echo(f"    source: {entry.url} ({entry.file}); {trust}")
    for alias, target in sorted(catalogue.aliases.items()):
        click.echo(f"{alias} -> {target}")
    click.echo("'oodfilter scan' uses clipn-vitb16 when no --model is given.")


@click.command("download")
@click.argument("name")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=_CACHE_HELP)
def download_command(name: str, cache_dir: Path | None) -> None:
    """Download and convert the catalogue model NAME now (see 'oodfilter models'), or an hf-hub: bundle.

    The same happens on first use; doing it ahead of time suits air-gapped machines: download where there
    is network, then copy the cache folder (models/NAME) to the same place on the other machine. A model
    already cached is only checked. hf-hub:ORG/REPO[@REVISION] fetches a bundle into the hub's own cache.
    """
    from oodfilter.model.catalogue import require_catalogue_entry
    from oodfilter.model.names import HUB_PREFIX

    if not name.startswith(HUB_PREFIX):
        require_catalogue_entry(name)  # an unknown name fails before torch and the downloaders are imported
    from oodfilter.model.download import ensure_catalogue_bundle
    from oodfilter.model.hub import fetch_hub_bundle, hub_bundle_manifest, parse_hub_name
    from oodfilter.model.manifest import read_manifest, verify_files

    hub = parse_hub_name(name)
    if hub is None:
        bundle = ensure_catalogue_bundle(name, cache_dir=cache_dir)
    else:
        manifest = hub_bundle_manifest(hub)
        if manifest is None:
            raise click.ClickException(f"{name} holds no oodfilter bundle (no oodfilter.json); nothing to download")
        bundle = fetch_hub_bundle(hub, manifest)
    verify_files(bundle, read_manifest(bundle))  # every file against its sha256, as loading will
    click.echo(f"{name} is ready: {bundle} (use it with --model {name})")
