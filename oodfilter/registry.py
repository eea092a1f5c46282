"""Named registries for extension points, with lazy entry-point discovery.

A :class:`Registry` is one extension point. Two exist today: score methods
(:data:`oodfilter.scoring.methods.score_methods`, entry-point group ``oodfilter.scorers``) and ``oodfilter fit``
subcommands (:data:`oodfilter.cli.fit.fitters`, group ``oodfilter.fitters``). Built-ins
register through the same ``register`` call that third-party plugins use; plugins are discovered once,
lazily, from the entry-point group ``oodfilter.<point>``. A plugin that fails to load is recorded in
:attr:`Registry.failures` and skipped, never fatal.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

from oodfilter.errors import UnknownNameError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories for one extension point.

    Args:
        point: Name of the extension point; plugins register under the entry-point group
            ``oodfilter.<point>``.

    """

    def __init__(self, point: str) -> None:
        self.point = point
        self.group = f"oodfilter.{point}"
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._discovered = False
        self.failures: dict[str, str] = {}

    def register(self, name: str, *, source: str = "builtin") -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name`` (warns on overwrite)."""

        def decorator(item: T) -> T:
            self.add(name, item, source=source)
            return item

        return decorator

    def add(self, name: str, item: T, *, source: str = "builtin") -> None:
        """Register ``item`` under ``name``; an existing entry is replaced with a warning."""
        key = name.lower()
        if key in self._items and self._items[key] is not item:
            warnings.warn(
                f"{self.point} '{key}' from {self._sources[key]} is replaced by one from {source}",
                stacklevel=3,
            )
        self._items[key] = item
        self._sources[key] = source

    def get(self, name: str) -> T:
        """Return the entry registered as ``name``; raise :class:`UnknownNameError` naming the choices."""
        self._discover()
        key = name.lower()
        if key not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"unknown {self.point} '{name}'; registered: {known}")
        return self._items[key]

    def check_known(self, name: str) -> None:
        """Refuse a name that nothing registers, without loading any plugin (an entry point's name counts).

        Raises:
            UnknownNameError: ``name`` is neither registered nor the name of an installed entry point; the
                message names the choices.

        """
        key = name.lower()
        declared = {entry_point.name.lower() for entry_point in self.entry_points()}
        if key not in self._items and key not in declared:
            known = ", ".join(sorted(set(self._items) | declared)) or "none"
            raise UnknownNameError(f"unknown {self.point} '{name}'; registered: {known}")

    def peek(self, name: str) -> T | None:
        """Return ``name``'s entry when it is known without loading a plugin, else None.

        That is a registered entry (a built-in, or a plugin already loaded) that no installed plugin
        would replace under the same name.
        """
        key = name.lower()
        if key not in self._items:
            return None
        if not self._discovered and any(entry_point.name.lower() == key for entry_point in self.entry_points()):
            return None
        return self._items[key]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with the given arguments and return its result."""
        factory = self.get(name)
        if not callable(factory):
            raise TypeError(f"{self.point} '{name}' is not callable")
        return factory(*args, **kwargs)

    def registered(self) -> dict[str, tuple[T, str]]:
        """Return name → (entry, source) for what is registered so far, without discovering plugins."""
        return {name: (item, self._sources[name]) for name, item in sorted(self._items.items())}

    def entry_points(self) -> list[metadata.EntryPoint]:
        """Return the installed entry points of this registry's group, without loading them."""
        return list(metadata.entry_points(group=self.group))

    def list(self) -> list[str]:
        """Return the registered names, sorted."""
        self._discover()
        return sorted(self._items)

    def source(self, name: str) -> str:
        """Return where ``name`` came from: ``builtin`` or the distribution of its plugin."""
        self._discover()
        return self._sources[name.lower()]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for entry_point in self.entry_points():
            dist = entry_point.dist.name if entry_point.dist is not None else "unknown distribution"
            try:
                item = entry_point.load()
            except Exception as error:  # a broken plugin must never break the host
                self.failures[entry_point.name] = f"{dist}: {type(error).__name__}: {error}"
                logger.warning("skipping %s plugin '%s' (%s)", self.point, entry_point.name, error)
                continue
            self.add(entry_point.name, item, source=dist)
