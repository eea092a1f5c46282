"""What installed plugins register, read from their source without importing them.

``oodfilter plugins`` must answer in a fraction of a second, but importing a plugin runs its modules, and
a score-method plugin imports torch (seconds). So the listing reads each entry point's module instead:

- the target (``module:attribute``) must be defined in that module's source;
- every module that importing it would run must exist: the plugin's own modules (its package's
  ``__init__`` files and what they import, followed through the source) and the first component of
  every other import (located by the import system, not run);
- a target class's attributes (``needs_no_branch = True``) are its literal class-level assignments, then
  those of its bases: a base in the plugin's own code is read from source, another (the host's
  ``ScoreMethod``) is imported and asked.

What only running the code shows (an exception raised while importing, a name that an imported module
lacks) is left to loading: ``oodfilter plugins --load``, or the first command that uses the plugin.
Where an attribute cannot be read (a value that is not a literal, a base that cannot be resolved),
:func:`survey` loads the registry's plugins as before rather than guess.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

from oodfilter.registry import Registry

_UNKNOWN = object()  # an attribute whose value only running the code would tell


@dataclass(frozen=True)
class PluginInfo:
    """One entry point, as its source shows it.

    Attributes:
        name: The entry point's name (the name it registers).
        distribution: The distribution that declares it.
        problem: Why importing it would fail (``Type: message``), or None when its source shows no reason.
        attributes: The asked-for attributes of the target that could be read (inherited ones included).
        complete: False when an asked-for attribute could not be read (only loading would tell).

    """

    name: str
    distribution: str
    problem: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    complete: bool = True


@dataclass(frozen=True)
class Survey:
    """A registry's entries without importing its plugins: what ``oodfilter plugins`` prints.

    Attributes:
        entries: Name → (source, attributes), sorted by name; plugins replace built-ins of the same name.
        failures: Name → why its plugin would not load (``distribution: Type: message``).

    """

    entries: dict[str, tuple[str, dict[str, Any]]]
    failures: dict[str, str]


class _Source:
    """Modules located and parsed by name, without running them."""

    def __init__(self) -> None:
        self._trees: dict[str, ast.Module] = {}

    @staticmethod
    def spec(name: str) -> ModuleSpec | None:
        """Locate the module ``name``; only the import system's finders run, no module code."""
        parts = name.split(".")
        try:
            spec = importlib.util.find_spec(parts[0])  # a top-level name is located without importing anything
        except (ImportError, ValueError):
            return None
        for depth in range(2, len(parts) + 1):
            if spec is None or spec.submodule_search_locations is None:
                return None
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]),
                                                            list(spec.submodule_search_locations))
        return spec

    def tree(self, name: str) -> ast.Module:
        """Parse the module ``name`` (an empty module when it has no Python source, e.g. an extension).

        Raises:
            ModuleNotFoundError: no such module.
            SyntaxError: its source does not parse.

        """
        if name not in self._trees:
            spec = self.spec(name)
            if spec is None:
                raise ModuleNotFoundError(f"No module named '{name}'")
            origin = spec.origin
            source = Path(origin).read_text(encoding="utf-8") if origin and origin.endswith(".py") else ""
            self._trees[name] = ast.parse(source, filename=origin or name)
        return self._trees[name]

    def package_of(self, module: str) -> str:
        """Return the package that relative imports in ``module`` start from: itself if it is a package."""
        spec = self.spec(module)
        return module if spec is not None and spec.submodule_search_locations is not None else module.rpartition(".")[0]


def inspect_entry_point(entry_point: metadata.EntryPoint, attributes: Sequence[str] = ()) -> PluginInfo:
    """Read what ``entry_point`` would register from its source (see the module docstring).

    Args:
        entry_point: An installed entry point (``module:attribute``).
        attributes: Class attributes of the target to read (e.g. ``needs_no_branch``).

    """
    dist = entry_point.dist.name if entry_point.dist is not None else "unknown distribution"
    reader = _Reader(entry_point.module.split(".")[0])
    try:
        reader.check_runs(entry_point.module)
        values = reader.target_attributes(entry_point.module, entry_point.attr, attributes) if entry_point.attr else {}
    except (ImportError, SyntaxError, AttributeError, OSError, UnicodeDecodeError) as error:
        return PluginInfo(entry_point.name, dist, problem=f"{type(error).__name__}: {error}")
    known = {key: value for key, value in values.items() if value is not _UNKNOWN}
    return PluginInfo(entry_point.name, dist, attributes=known, complete=len(known) == len(values))


def survey(registry: Registry[Any], attributes: Sequence[str] = (), *, load: bool = False) -> Survey:
    """List ``registry``'s built-ins and installed plugins with their ``attributes``.

    A built-in's attributes are read from the registered object; a plugin's from its source, importing no
    plugin. With ``load``, or when some plugin's attribute cannot be read from source, the registry loads
    its plugins (as every command that uses them does) and the survey reports what loaded.
    """
    infos = [] if load else [inspect_entry_point(entry_point, attributes) for entry_point in registry.entry_points()]
    if load or not all(info.complete for info in infos):
        loaded = {name: (registry.get(name), registry.source(name)) for name in registry.list()}  # loads plugins
        infos, failures = [], dict(registry.failures)
    else:
        loaded = registry.registered()
        failures = {info.name: f"{info.distribution}: {info.problem}" for info in infos if info.problem}
    entries = {name: (source, {key: getattr(item, key) for key in attributes if hasattr(item, key)})
               for name, (item, source) in loaded.items()}
    for info in infos:
        if info.problem is None:
            entries[info.name.lower()] = (info.distribution, info.attributes)
    return Survey(dict(sorted(entries.items())), dict(sorted(failures.items())))


class _Reader:
    """Reads one plugin's modules: which ones importing it runs, and its target class's attributes."""

    def __init__(self, package: str) -> None:
        self.package = package  # the plugin's top-level package: its modules are followed through their source
        self.source = _Source()
        self._checked: set[str] = set()

    def _own(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def check_runs(self, name: str) -> None:
        """Check every module that importing ``name`` runs: its parent packages, itself and its imports.

        Raises:
            ModuleNotFoundError: one of them does not exist.
            SyntaxError: one of the plugin's own modules does not parse.

        """
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            module = ".".join(parts[:depth])
            if module in self._checked:
                continue
            self._checked.add(module)
            if not self._own(module):
                if depth == 1 and self.source.spec(module) is None:
                    raise ModuleNotFoundError(f"No module named '{module}'")
                return  # another distribution's module: located, not followed
            for imported in self._imports(module, self.source.tree(module)):
                self.check_runs(imported)

    def _imports(self, module: str, tree: ast.Module) -> list[str]:
        """Return the modules that running ``module``'s top level imports (conditional imports are skipped)."""
        package = self.source.package_of(module)
        names: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else (node.module or "")
                if base == "__future__":
                    continue
                names.append(base)
                if self._own(base):  # `from package import submodule` runs the submodule
                    names.extend(f"{base}.{alias.name}" for alias in node.names
                                 if alias.name != "*" and self.source.spec(f"{base}.{alias.name}") is not None)
        return names

    def target_attributes(self, module: str, attr: str, wanted: Sequence[str]) -> dict[str, Any]:
        """Return ``wanted`` attributes of ``module.attr`` (``_UNKNOWN`` where the source cannot tell).

        Raises:
            AttributeError: the module does not define ``attr``.

        """
        node = self._definition(module, attr)
        if node is None:
            raise AttributeError(f"module '{module}' has no attribute '{attr}'")
        if not wanted:
            return {}
        if isinstance(node, ast.ClassDef):
            return self._class_attributes(module, node, wanted, depth=0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            origin = self._imported_from(module, node, attr)
            if origin is not None and self._own(origin[0]):
                return self.target_attributes(origin[0], origin[1], wanted)
        return dict.fromkeys(wanted, _UNKNOWN)

    def _definition(self, module: str, attr: str) -> ast.stmt | None:
        """Return the last top-level statement of ``module`` that binds ``attr`` (None when none does)."""
        found: ast.stmt | None = None
        for node in self.source.tree(module).body:
            if _binds(node, attr):
                found = node
        return found

    def _imported_from(self, module: str, node: ast.Import | ast.ImportFrom, name: str) -> tuple[str, str] | None:
        """Where ``from X import Y as name`` in ``module`` takes ``name`` from: (X, Y); None for other forms."""
        if not isinstance(node, ast.ImportFrom):
            return None
        package = self.source.package_of(module)
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
            if node.level else (node.module or "")
        for alias in node.names:
            if (alias.asname or alias.name) == name and alias.name != "*":
                return base, alias.name
        return None

    def _class_attributes(self, module: str, node: ast.ClassDef, wanted: Sequence[str], depth: int) -> dict[str, Any]:
        """``wanted`` attributes of the class ``node``: its own literal assignments, then its bases' (in order)."""
        values: dict[str, Any] = {}
        for statement in node.body:
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                targets, value = [statement.target], statement.value
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id in wanted:
                    try:
                        values[target.id] = ast.literal_eval(value)
                    except ValueError:
                        values[target.id] = _UNKNOWN
        for base in node.bases:
            missing = [key for key in wanted if key not in values]
            if not missing:
                break
            for key, value in self._base_attributes(module, base, missing, depth).items():
                values.setdefault(key, value)
        return values

    def _base_attributes(self, module: str, base: ast.expr, wanted: Sequence[str], depth: int) -> dict[str, Any]:
        """``wanted`` attributes of a base class (those it lacks are left out; ``_UNKNOWN`` if unresolvable)."""
        if depth > 20 or not isinstance(base, ast.Name):
            return dict.fromkeys(wanted, _UNKNOWN)
        node = self._definition(module, base.id)
        if isinstance(node, ast.ClassDef):
            return self._class_attributes(module, node, wanted, depth + 1)
        origin = self._imported_from(module, node, base.id) if isinstance(node, ast.ImportFrom) else None
        if origin is None:
            return dict.fromkeys(wanted, _UNKNOWN)
        where, name = origin
        if self._own(where):
            found = self._definition(where, name)
            if isinstance(found, ast.ClassDef):
                return self._class_attributes(where, found, wanted, depth + 1)
            return dict.fromkeys(wanted, _UNKNOWN)
        try:  # the host's (or another library's) class: ask it
            cls = getattr(importlib.import_module(where), name)
        except Exception:  # whatever fails here, loading the plugin reports
            return dict.fromkeys(wanted, _UNKNOWN)
        return {key: getattr(cls, key) for key in wanted if hasattr(cls, key)}


def _binds(node: ast.stmt, name: str) -> bool:
    """Whether the top-level statement ``node`` may bind ``name`` (a conditional block counts if it assigns it)."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(target, ast.Name) and target.id == name for target in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name and node.value is not None
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return any(alias.name == "*" or (alias.asname or alias.name.split(".")[0]) == name for alias in node.names)
    if isinstance(node, (ast.If, ast.Try)):
        return any(isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id == name for n in ast.walk(node))
    return False
