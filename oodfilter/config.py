"""Configuration: dataclass defaults < YAML file < explicit overrides (the CLI's flags), typed once.

Every value that comes from a YAML file or from ``overrides`` is converted through the type its field
declares (``int``, ``float``, ``bool``, ``str``, ``list[str]``, unions such as ``str | list[str]`` and
``float | None``), so ``batch_size: "32"`` becomes 32 and ``recursive: "no"`` becomes False. The CLI's
options convert their values with the same rules (see ``oodfilter.cli.options``).

This module imports nothing heavy: the CLI reads it to build ``--help``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from oodfilter.errors import InputError
from oodfilter.messages import excerpt
from oodfilter.safe_yaml import YamlAliasError, load_yaml

C = TypeVar("C")

# The words click's BOOL type accepts (compared after strip() and lower()).
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")


@dataclasses.dataclass
class ModelOptions:
    """The options every command that runs a CLIPN model shares (scan, finetune, eval).

    Attributes:
        model: Bundle folder, reference ``.pt``, open_clip name (``ViT-B-16``) or ``test-tiny``.
        pretrained: Pretrained tag or weights file for an open_clip name.
        device: Where the model runs: ``auto``, ``cpu``, ``cuda`` (the library also takes ``cuda:N``).
        precision: ``auto`` (bf16 autocast on CUDA, fp16 on older GPUs, fp32 on the CPU), ``fp32``, ``fp16``
            (CUDA), ``bf16`` (CUDA, or a CPU with native bf16: ~3x faster, ~1-3% of decisions move) or
            ``int8`` (scoring on the CPU).
        batch_size: Images per forward pass (a subclass may declare another default).
    """

    model: str = "ViT-B-16"
    pretrained: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64


class ConversionError(ValueError):
    """A value does not fit a declared type; ``expected`` says what would (e.g. "a whole number")."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"must be {expected}, got {excerpt(value)}")
        self.expected = expected
        self.value = value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
    raise ConversionError(describe_type(bool), value)


def _to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConversionError(describe_type(int), value)


def _to_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float (YAML reads 400 digits as an int)
            raise ConversionError(describe_type(float), value) from None
    if isinstance(value, str):
        try:  # also takes "3e-4", which YAML 1.1 leaves as text
            return float(value.strip())
        except ValueError:
            pass
    raise ConversionError(describe_type(float), value)


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConversionError(describe_type(str), value)


_SCALARS: dict[Any, Callable[[Any], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
_WORDS: dict[Any, str] = {
    bool: "true or false (also yes/no, on/off, 1/0)",
    int: "a whole number",
    float: "a number",
    str: "text",
    type(None): "null",
}


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def describe_type(annotation: Any) -> str:
    """Say in words what a value of ``annotation`` looks like (for error messages)."""
    if _is_union(annotation):
        return " or ".join(describe_type(arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"a list of {describe_type(item)}" if item is not Any else "a list"
    return _WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _fits(annotation: Any, value: Any) -> bool:
    """Whether ``value`` already has the shape of ``annotation`` (so a union picks that member)."""
    if typing.get_origin(annotation) is list:
        return isinstance(value, (list, tuple))
    if annotation in (int, float):
        return isinstance(value, annotation) and not isinstance(value, bool)
    return isinstance(annotation, type) and isinstance(value, annotation)


def _to_union(annotation: Any, value: Any) -> Any:
    members = typing.get_args(annotation)
    if value is None and type(None) in members:
        return None
    candidates = [m for m in members if m is not type(None)]
    ordered = [m for m in candidates if _fits(m, value)] + [m for m in candidates if not _fits(m, value)]
    for member in ordered:
        try:
            return convert_value(member, value)
        except ConversionError:
            continue
    raise ConversionError(describe_type(annotation), value)


def _to_list(annotation: Any, value: Any) -> list[Any]:
    (item,) = typing.get_args(annotation) or (Any,)
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif value is None or isinstance(value, dict):
        raise ConversionError(describe_type(annotation), value)
    else:  # a list option given one value
        items = [value]
    try:
        return [convert_value(item, element) for element in items]
    except ConversionError:
        raise ConversionError(describe_type(annotation), value) from None


def convert_value(annotation: Any, value: Any) -> Any:
    """Convert ``value`` to the declared type ``annotation``.

    Text is parsed ("32" → 32, "0.5" → 0.5, "no" → False with click's words for booleans); numbers
    become text where text is declared; one value becomes a one-item list where a list is declared; a
    union takes the first member the value already fits, else the first that converts.

    Raises:
        ConversionError: the value cannot be read as ``annotation``.
        TypeError: ``annotation`` is a type this module does not handle (a programming error).
    """
    if annotation is Any:
        return value
    if _is_union(annotation):
        return _to_union(annotation, value)
    if typing.get_origin(annotation) is list:
        return _to_list(annotation, value)
    converter = _SCALARS.get(annotation)
    if converter is None:
        raise TypeError(f"config values of type {annotation!r} are not supported; use bool, int, float, str, "
                        "lists and unions of them")
    if value is None:
        raise ConversionError(describe_type(annotation), value)
    return converter(value)


def field_types(cls: type) -> dict[str, Any]:
    """Return field name → resolved type of the config dataclass ``cls`` (string annotations evaluated)."""
    return _field_types(cls)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def default_of(cls: type, name: str) -> Any:
    """Return the default of field ``name`` of dataclass ``cls`` (calling its default factory, if any).

    Raises:
        KeyError: ``cls`` has no such field, or the field has no default.
    """
    for item in dataclasses.fields(cls):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name}")


def convert_field(cls: type, name: str, value: Any, *, source: str) -> Any:
    """Convert ``value`` for field ``name`` of ``cls``; ``source`` says where it came from.

    Raises:
        InputError: the value does not fit the field's type (the message names source, key and value).
    """
    try:
        return convert_value(field_types(cls)[name], value)
    except ConversionError as error:
        raise InputError(f"{source}: {name} {error}") from error


def _read_yaml(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    try:
        loaded = load_yaml(file.read_text(encoding="utf-8"), f"config file {file}")
    except YamlAliasError:
        raise
    except FileNotFoundError as error:
        raise InputError(f"config file {file} does not exist") from error
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(f"config file {file} is not readable YAML: {error}") from error
    except (ValueError, OverflowError, RecursionError) as error:  # raised by PyYAML's own constructors
        raise InputError(f"config file {file} holds a value YAML cannot build ({_yaml_failure(error)}); fix the "
                         "file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(f"config file {file} must hold a mapping of option: value")
    return {str(key).replace("-", "_"): value for key, value in loaded.items()}


def _yaml_failure(error: Exception) -> str:
    """Say what PyYAML failed to build: a date past the calendar, a number or escape too large, deep nesting."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if "integer string conversion" in str(error):
        return "an integer of thousands of digits"
    if isinstance(error, OverflowError):
        return "a number or \\U escape too large"
    return str(error)[:200]


def build_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build a config dataclass ``cls`` from its defaults, then a YAML file, then ``overrides``.

    YAML keys may use dashes or underscores. Every given value is converted through its field's declared
    type (:func:`convert_value`); a list option given one value becomes a one-item list.

    Raises:
        InputError: the file is unreadable or not a mapping, names options ``cls`` does not have, or
            holds a value its option's type cannot take.
    """
    known = field_types(cls)
    given: dict[str, tuple[Any, str]] = {}  # key → (value, where it came from)
    if path is not None:
        source = f"config file {Path(path)}"
        given.update({key: (value, source) for key, value in _read_yaml(path).items()})
    given.update({key: (value, "overrides") for key, value in (overrides or {}).items()})
    for where in dict.fromkeys(source for _, source in given.values()):
        unknown = sorted(key for key, (_, source) in given.items() if source == where and key not in known)
        if unknown:
            named = ", ".join(excerpt(key, 60).strip("'") for key in unknown[:10]) + (", ..." * (len(unknown) > 10))
            raise InputError(f"{where}: unknown option(s): {named}; known: {', '.join(sorted(known))}")
    return cls(**{key: convert_field(cls, key, value, source=source) for key, (value, source) in given.items()})
