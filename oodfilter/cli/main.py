"""Entry point of the ``oodfilter`` command: a click group with lazily imported subcommands."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from typing import Any

import click

from oodfilter.cli.options import QUIET_KEY
from oodfilter.errors import OODFilterError
from oodfilter.messages import redact
from oodfilter.sinks.names import printable

# command name → "module:attribute"; modules are imported only when their command runs, so that
# `oodfilter --help` does not pay for importing torch and open_clip.
COMMANDS = {
    "apply": "oodfilter.cli.apply:apply_command",
    "convert-clipn": "oodfilter.cli.convert:convert_clipn",
    "download": "oodfilter.cli.models:download_command",
    "eval": "oodfilter.cli.evaluate:eval_command",
    "export-features": "oodfilter.cli.export:export_features_command",
    "finetune": "oodfilter.cli.finetune:finetune_command",
    "fit": "oodfilter.cli.fit:fit_group",
    "models": "oodfilter.cli.models:models_command",
    "plugins": "oodfilter.cli.plugins:plugins",
    "report": "oodfilter.cli.report:report_command",
    "rescore": "oodfilter.cli.rescore:rescore_command",
    "robustness": "oodfilter.cli.robustness:robustness_command",
    "scan": "oodfilter.cli.scan:scan_command",
    "undo": "oodfilter.cli.undo:undo_command",
}

EXIT_USAGE = 2
EXIT_UNEXPECTED = 1


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return the command names, sorted."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command ``cmd_name``."""
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="oodfilter")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display and no summary, whichever command follows "
              "(the same as that command's -q).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Find images that belong to none of your classes, with CLIPN and peer scores."""
    ctx.meta[QUIET_KEY] = quiet
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:  # a warning is a message to the user, not a pointer into the source
        warnings.formatwarning = _plain_warning


def _plain_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   line: str | None = None) -> str:
    return f"warning: {redact(str(message))}\n"


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI with an error boundary: known errors print one clear line, never a traceback."""
    try:
        return cli.main(args=argv, prog_name="oodfilter", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_UNEXPECTED)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except OODFilterError as error:
        click.echo(printable(f"Error: {redact(str(error))}"), err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as error:
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        click.echo(printable(f"Unexpected error: {type(error).__name__}: {redact(str(error))} "
                             "(run with -vv for details)"), err=True)
        sys.exit(EXIT_UNEXPECTED)
