"""Old public names kept for one release: each use warns and names the replacement (as timm does)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (removed in the next release)."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=stacklevel)


def deprecated_attribute(module: str, namespace: Mapping[str, Any], aliases: Mapping[str, str], name: str) -> Any:
    """Resolve ``name`` for a module ``__getattr__``: an old alias warns and returns its new value.

    Args:
        module: The module's ``__name__``, for the messages.
        namespace: The module's ``globals()``, which holds the new names.
        aliases: Old name → new name.
        name: The attribute asked for.

    Raises:
        AttributeError: ``name`` is neither an alias nor defined.

    """
    if name in aliases:
        warn_deprecated(f"{module}.{name}", f"{module}.{aliases[name]}", stacklevel=4)
        return namespace[aliases[name]]
    raise AttributeError(f"module '{module}' has no attribute '{name}'")
