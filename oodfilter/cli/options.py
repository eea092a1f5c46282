"""Helpers shared by CLI commands: options tied to config fields, the shared model options, explicit flags.

An option made by :func:`config_option` belongs to one field of a config dataclass named "module:Class".
Its values convert through the field's declared type with the rules of :mod:`oodfilter.config` (the
same as a ``--config`` YAML file), and ``{default}`` in its help is the field's default. The config
module is imported only when a value is converted or help is shown, so that ``oodfilter --help`` (which
imports every command module) does not import torch.
"""

from __future__ import annotations

import functools
import importlib
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from oodfilter.config import DEVICES, PRECISIONS, ConversionError, convert_value, default_of, field_types

F = TypeVar("F", bound=Callable[..., Any])

_METAVARS = {int: "integer", float: "float", str: "text", bool: "boolean"}
_MODEL_HELP = {
    "model": "Bundle folder, reference .pt, open_clip name, or test-tiny ({default}).",
    "pretrained": "Pretrained tag or weights file for an open_clip name.",
    "device": "Where the model runs ({default}).",
    "precision": "Numeric precision ({default}): auto = bf16 autocast on CUDA, fp32 on the CPU; bf16 on a CPU "
                 "with avx512_bf16/AMX scores ~3x faster but moves ~1-3% of decisions (README); int8 = "
                 "quantised image tower (CPU scoring only).",
    "batch_size": "Images per forward pass ({default}).",
}


@functools.cache
def config_class(spec: str) -> type:
    """Import and return the config dataclass named ``"module:Class"``."""
    module_name, _, attribute = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(cls, type):
        raise TypeError(f"{spec} is not a class")
    return cls


def _one_value_type(annotation: Any) -> Any:
    """Return the type one occurrence of a flag gives: the item type of a list field."""
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return item
    return annotation


def _metavar(annotation: Any) -> str:
    members = [m for m in typing.get_args(annotation) if m is not type(None)] or [annotation]
    return _METAVARS.get(_one_value_type(members[0]), "value")


def format_default(value: Any) -> str:
    """Write a default for a help text: ``none`` for None, items joined by commas for a list."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return str(value)


class FieldType(click.ParamType):
    """Converts a flag's text through the declared type of a config field (one item of a list field)."""

    name = "value"  # replaced by the field's type name when help is shown

    def __init__(self, config: str, field: str) -> None:
        self.config = config
        self.field = field

    def annotation(self) -> Any:
        """Return the declared type one occurrence of the flag converts to."""
        return _one_value_type(field_types(config_class(self.config))[self.field])

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Convert ``value``; a value that does not fit fails with click's usage error."""
        try:
            return convert_value(self.annotation(), value)
        except ConversionError as error:
            self.fail(str(error), param, ctx)


class ConfigOption(click.Option):
    """A click option for the field ``field`` (default: the option's name) of the config ``config``.

    Without an explicit ``type`` (and unless it is a flag) its values convert through the field's type;
    ``{default}`` in its help reads the field's default when help is shown. ``needed`` marks the help
    ``[required]``: the value must be given, on the command line or in the ``--config`` file (so click's own
    ``required``, which ignores the file, is not used).
    """

    def __init__(self, param_decls: list[str], *, config: str, field: str | None = None, needed: bool = False,
                 **attrs: Any) -> None:
        if needed:
            attrs["help"] = f"{attrs.get('help') or ''}  [required]".strip()
        if "type" not in attrs and not attrs.get("is_flag"):
            attrs["type"] = FieldType(config, "")  # the field name is known once click has named the option
        super().__init__(param_decls, **attrs)
        self.config = config
        self.field = field or str(self.name)
        if isinstance(self.type, FieldType):
            self.type.field = self.field

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        """Fill in the field's default and type name, then let click write the help line."""
        if self.help and "{default}" in self.help:
            default = default_of(config_class(self.config), self.field)
            self.help = self.help.replace("{default}", format_default(default))
        if isinstance(self.type, FieldType):
            self.type.name = _metavar(self.type.annotation())
        return super().get_help_record(ctx)


def config_option(config: str, *param_decls: str, **attrs: Any) -> Callable[[F], F]:
    """Return a ``click.option`` of class :class:`ConfigOption` for a field of the config ``config``."""
    return click.option(*param_decls, cls=ConfigOption, config=config, **attrs)


def model_options(config: str, **helps: str) -> Callable[[F], F]:
    """Add the :class:`~oodfilter.config.ModelOptions` flags of ``config``, in help order.

    Adds --model/-m, --pretrained, --device, --precision and --batch-size; ``helps`` replaces the help of
    some of them (keyed by field name, ``{default}`` allowed).
    """
    texts = {**_MODEL_HELP, **helps}
    decorators = [
        config_option(config, "--model", "-m", help=texts["model"]),
        config_option(config, "--pretrained", help=texts["pretrained"]),
        config_option(config, "--device", type=click.Choice(DEVICES), help=texts["device"]),
        config_option(config, "--precision", type=click.Choice(PRECISIONS), help=texts["precision"]),
        config_option(config, "--batch-size", help=texts["batch_size"]),
    ]

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def explicit_options(ctx: click.Context, options: dict[str, Any], *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Return the options the user typed (so they override a config file while defaults do not)."""
    skipped = set(skip)
    return {
        name: value
        for name, value in options.items()
        if name not in skipped and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }


# ``ctx.meta`` key of the top-level ``oodfilter -q``: every command's context shares its root's meta.
QUIET_KEY = "oodfilter.quiet"


def quiet_asked(quiet: bool = False) -> bool:
    """Return True when ``-q``/``--quiet`` was given to the command (``quiet``) or before it (``oodfilter -q scan``)."""
    ctx = click.get_current_context(silent=True)
    return quiet or bool(ctx is not None and ctx.meta.get(QUIET_KEY))
