"""Helpers shared by CLI commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click
from click.core import ParameterSource


def explicit_options(ctx: click.Context, options: dict[str, Any], *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Return the options the user typed (so they override a config file while defaults do not)."""
    skipped = set(skip)
    return {
        name: value
        for name, value in options.items()
        if name not in skipped and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
