"""Lazy re-exports for package ``__init__`` modules (PEP 562), so that importing a package stays cheap.

A package that re-exports names from heavy modules (torch, open_clip, faiss) maps each name to the
module that defines it and resolves it on first access from its module ``__getattr__``. The CLI then
imports, say, ``oodfilter.scan.config`` for ``--help`` without ``oodfilter/scan/__init__`` importing
the scan runner (and torch) first. The import machinery stays the same: ``from oodfilter.scan import
scan`` and ``oodfilter.scan.scan`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any


def lazy_attribute(package: str, namespace: MutableMapping[str, Any], exports: Mapping[str, str], name: str) -> Any:
    """Resolve ``name`` for a package's module ``__getattr__`` and keep it in the package's namespace.

    Args:
        package: The package's ``__name__``, for the error message.
        namespace: The package's ``globals()``; the value is stored there so later lookups are plain.
        exports: Public name → the module that defines it (a name that is the module itself, such as a
            re-exported submodule, maps to that module).
        name: The attribute asked for.

    Raises:
        AttributeError: ``name`` is not one of ``exports``.

    """
    where = exports.get(name)
    if where is None:
        raise AttributeError(f"module '{package}' has no attribute '{name}'")
    module = importlib.import_module(where)
    value = module if where == f"{package}.{name}" else getattr(module, name)
    namespace[name] = value
    return value


def lazy_dir(namespace: Mapping[str, Any], exports: Mapping[str, str]) -> list[str]:
    """Return a package's ``dir()``: what it holds now plus every name it re-exports lazily."""
    return sorted(set(namespace) | set(exports))
