"""``oodfilter plugins``: list the registered score methods and any plugin that failed to load."""

from __future__ import annotations

import click


@click.command("plugins")
@click.option("--load", is_flag=True, help="Import every plugin, as a scan does, to also report errors that only "
              "running its code shows (imports torch: seconds).")
def plugins(load: bool) -> None:
    """List registered score methods and fitters, where each came from, and plugins that failed to load.

    Plugins are read from their source without importing them (a plugin that imports torch would take
    seconds): a missing module or dependency, a syntax error or a missing entry-point target is reported.
    With --load every plugin is imported instead.
    """
    from oodfilter.cli.fit import fitters
    from oodfilter.plugin_inspect import survey
    from oodfilter.scoring.methods import score_methods

    methods = survey(score_methods, ("needs_no_branch", "needs_reference"), load=load)
    fit = survey(fitters, load=load)
    click.echo("scorers:")
    for name, (source, attributes) in methods.entries.items():
        needs = ", ".join(word for key, word in (("needs_no_branch", "needs no-branch"),
                                                 ("needs_reference", "needs --reference"))
                          if attributes.get(key, False))
        click.echo(f"  {name:12s} {source:20s} {needs}".rstrip())
    click.echo("fitters (oodfilter fit NAME):")
    for name, (source, _) in fit.entries.items():
        click.echo(f"  {name:12s} {source}")
    for found in (methods, fit):
        for name, reason in found.failures.items():
            click.echo(f"  {name:12s} FAILED to load: {reason}")
