"""``oodfilter plugins``: list the registered scorers and any plugin that failed to load."""

from __future__ import annotations

import click


@click.command("plugins")
def plugins() -> None:
    """List registered score methods, where each came from, and plugins that failed to load."""
    from oodfilter.scoring.methods import scorers

    for name in scorers.list():
        method = scorers.get(name)
        needs = "needs no-branch" if getattr(method, "needs_no_branch", False) else ""
        click.echo(f"{name:12s} {scorers.source(name):20s} {needs}".rstrip())
    for name, reason in sorted(scorers.failures.items()):
        click.echo(f"{name:12s} FAILED: {reason}")
