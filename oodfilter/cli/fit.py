"""``oodfilter fit NAME``: fit what a scorer plugin needs (e.g. ``oodfilter fit plp``).

Plugins register click commands under the entry-point group ``oodfilter.fitters``; a plugin that fails
to load is listed by ``oodfilter plugins`` and never breaks the CLI.
"""

from __future__ import annotations

import click

from oodfilter.registry import Registry

fitters: Registry[click.Command] = Registry("fitters")


class FitterGroup(click.Group):
    """A click group whose subcommands come from the ``fitters`` registry."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return the registered fitter names."""
        return fitters.list()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the fitter ``cmd_name``, or None if no plugin provides it."""
        return fitters.get(cmd_name) if cmd_name in fitters else None

    def invoke(self, ctx: click.Context) -> object:
        """Run the fitter, showing the caption encodes it makes (class vectors) and their estimate."""
        from oodfilter.cli.options import quiet_asked
        from oodfilter.cli.progress import TaskProgress

        with TaskProgress("fitting", quiet=quiet_asked()) as display, display.encodes():
            return super().invoke(ctx)


@click.group("fit", cls=FitterGroup)
def fit_group() -> None:
    """Fit what a score method needs from your data (provided by plugins, e.g. `fit plp`)."""
