"""``oodfilter plugins``: list the registered scorers and any plugin that failed to load."""

from __future__ import annotations

import click


@click.command("plugins")
def plugins() -> None:
    """List registered score methods and fitters, where each came from, and plugins that failed to load."""
    from oodfilter.cli.fit import fitters
    from oodfilter.scoring.methods import scorers

    click.echo("scorers:")
    for name in scorers.list():
        method = scorers.get(name)
        needs = "needs no-branch" if getattr(method, "needs_no_branch", False) else ""
        click.echo(f"  {name:12s} {scorers.source(name):20s} {needs}".rstrip())
    click.echo("fitters (oodfilter fit NAME):")
    for name in fitters.list():
        click.echo(f"  {name:12s} {fitters.source(name)}")
    for registry in (scorers, fitters):
        for name, reason in sorted(registry.failures.items()):
            click.echo(f"  {name:12s} FAILED to load: {reason}")
