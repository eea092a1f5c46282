"""``oodfilter plugins``: list the registered score methods and any plugin that failed to load."""

from __future__ import annotations

import click


@click.command("plugins")
def plugins() -> None:
    """List registered score methods and fitters, where each came from, and plugins that failed to load."""
    from oodfilter.cli.fit import fitters
    from oodfilter.scoring.methods import score_methods

    click.echo("scorers:")
    for name in score_methods.list():
        method = score_methods.get(name)
        needs = "needs no-branch" if getattr(method, "needs_no_branch", False) else ""
        click.echo(f"  {name:12s} {score_methods.source(name):20s} {needs}".rstrip())
    click.echo("fitters (oodfilter fit NAME):")
    for name in fitters.list():
        click.echo(f"  {name:12s} {fitters.source(name)}")
    for registry in (score_methods, fitters):
        for name, reason in sorted(registry.failures.items()):
            click.echo(f"  {name:12s} FAILED to load: {reason}")
