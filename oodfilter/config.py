"""Configuration files: dataclass defaults < YAML file < explicit overrides (the CLI's flags)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from oodfilter.errors import InputError

C = TypeVar("C")


def build_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build a config dataclass ``cls`` from its defaults, then a YAML file, then ``overrides``.

    YAML keys may use dashes or underscores. Lists given as a single string become one-item lists.

    Raises:
        InputError: the file is unreadable, not a mapping, or names options ``cls`` does not have.
    """
    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise InputError(f"config file {file} does not exist") from error
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
            raise InputError(f"config file {file} is not readable YAML: {error}") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(f"config file {file} must hold a mapping of option: value")
        values.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    values.update(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    for key, value in list(values.items()):
        if isinstance(value, str) and fields[key].default_factory is list:  # a list option given one value
            values[key] = [value]
    return cls(**values)
