"""The catalogue of named, pinned CLIPN weights (``clipn-vitb16`` and its repeats).

The built-in catalogue is package data (``model/data/catalogue.json``). ``$OODFILTER_CATALOGUE`` may
name a JSON file of the same format whose entries and aliases are added to it, replacing built-in ones of
the same name (a mirror of the weights, a private checkpoint, a test server).

Each entry says where the reference checkpoint is published (``url``: a Google Drive folder that holds
``file``, or a direct file URL), its architecture, and, when known, its size and sha256. A downloaded
entry lives in ``<cache root>/models/<name>/``: ``bundle/`` (the converted bundle that loads offline) and
``checkpoint.json`` (the trust record, see :mod:`oodfilter.model.trust`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from oodfilter.errors import InputError, ModelDownloadError
from oodfilter.json_parse import parse_json

CATALOGUE_ENV = "OODFILTER_CATALOGUE"
FORMAT = "oodfilter-catalogue"
URL_KINDS = ("drive-folder", "file")
MODELS_DIR = "models"
BUNDLE_DIR = "bundle"

_ENTRY_KEYS = {"description", "architecture", "url", "url_kind", "file", "size", "sha256"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CatalogueEntry:
    """One named checkpoint.

    Attributes:
        name: The entry's name (``clipn-vitb16-repeat3``).
        description: One line for ``oodfilter models``.
        architecture: The open_clip architecture the checkpoint was trained with.
        url: Where it is published: a Google Drive folder (``url_kind`` ``drive-folder``) or a file URL.
        url_kind: ``drive-folder`` or ``file``.
        file: The checkpoint's file name (looked up by name inside a folder).
        size: Its size in bytes, if published.
        sha256: Its sha256, if published; else the first verified download's is recorded (trust on first use).

    """

    name: str
    description: str
    architecture: str
    url: str
    url_kind: str
    file: str
    size: int | None
    sha256: str | None

    def folder(self, cache_root: Path) -> Path:
        """Return the entry's folder in the cache: ``<cache_root>/models/<name>``."""
        return cache_root / MODELS_DIR / self.name

    def bundle_dir(self, cache_root: Path) -> Path:
        """Return where the converted bundle lives: ``<cache_root>/models/<name>/bundle``."""
        return self.folder(cache_root) / BUNDLE_DIR


@dataclass(frozen=True)
class Catalogue:
    """Entries by name, and aliases (``clipn-vitb16`` → ``clipn-vitb16-repeat3``)."""

    entries: dict[str, CatalogueEntry]
    aliases: dict[str, str]

    def get(self, name: str) -> CatalogueEntry | None:
        """Return the entry ``name`` names, directly or through an alias; None if it names none."""
        return self.entries.get(self.aliases.get(name, name))

    def names(self) -> list[str]:
        """Entry names, then alias names, each sorted."""
        return sorted(self.entries) + sorted(self.aliases)


def load_catalogue(extra: str | Path | None = None) -> Catalogue:
    """Return the built-in catalogue, extended by ``extra`` (default: the file ``$OODFILTER_CATALOGUE`` names).

    Raises:
        InputError: a catalogue file is missing, not JSON, or malformed; the message names the file and key.

    """
    text = resources.files("oodfilter.model").joinpath("data").joinpath("catalogue.json").read_text(encoding="utf-8")
    entries, aliases = _parse(json.loads(text), "the built-in catalogue")
    extra = extra if extra is not None else os.environ.get(CATALOGUE_ENV) or None
    if extra is not None:
        more_entries, more_aliases = _parse(_read_json(Path(extra)), str(extra))
        entries.update(more_entries)
        aliases = {alias: target for alias, target in aliases.items() if alias not in more_entries}
        aliases.update(more_aliases)
    for alias, target in aliases.items():
        if target not in entries:
            raise InputError(f"catalogue alias '{alias}' points at '{target}', which is not a catalogue entry")
    return Catalogue(entries=entries, aliases=aliases)


def catalogue_entry(name: str) -> CatalogueEntry | None:
    """Return the catalogue entry ``name`` names (directly or as an alias), or None."""
    return load_catalogue().get(name)


def require_catalogue_entry(name: str) -> CatalogueEntry:
    """Return the catalogue entry ``name`` names.

    Raises:
        ModelDownloadError: ``name`` is not in the catalogue.

    """
    entry = catalogue_entry(name)
    if entry is None:
        raise ModelDownloadError(f"'{name}' is not in the model catalogue; 'oodfilter models' lists the names")
    return entry


def _read_json(path: Path) -> Any:
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InputError(f"catalogue file {path} (from ${CATALOGUE_ENV}) does not exist") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"catalogue file {path} is unreadable or not valid JSON: {error}") from error


def _parse(raw: Any, where: str) -> tuple[dict[str, CatalogueEntry], dict[str, str]]:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("format_version") != 1:
        raise InputError(f"{where} is not an oodfilter catalogue (format '{FORMAT}', format_version 1 expected)")
    models = raw.get("models", {})
    aliases = raw.get("aliases", {})
    if not isinstance(models, dict) or not isinstance(aliases, dict):
        raise InputError(f"{where}: 'models' and 'aliases' must be objects")
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in aliases.items()):
        raise InputError(f"{where}: 'aliases' must map names to entry names (strings)")
    return {name: _entry(name, value, where) for name, value in models.items()}, dict(aliases)


def _entry(name: str, value: Any, where: str) -> CatalogueEntry:
    if not isinstance(value, dict) or set(value) != _ENTRY_KEYS:
        keys = ", ".join(sorted(_ENTRY_KEYS))
        raise InputError(f"{where}: entry '{name}' must be an object with exactly the keys {keys}")
    for key in ("description", "architecture", "url", "file"):
        if not isinstance(value[key], str) or not value[key]:
            raise InputError(f"{where}: '{name}.{key}' must be a non-empty string")
    if value["url_kind"] not in URL_KINDS:
        raise InputError(f"{where}: '{name}.url_kind' must be one of {', '.join(URL_KINDS)}")
    size = value["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InputError(f"{where}: '{name}.size' must be a positive integer (bytes) or null")
    sha256 = value["sha256"]
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
        raise InputError(f"{where}: '{name}.sha256' must be 64 lowercase hex digits or null")
    if Path(value["file"]).name != value["file"]:
        raise InputError(f"{where}: '{name}.file' must be a bare file name, not a path")
    return CatalogueEntry(name=name, description=value["description"], architecture=value["architecture"],
                          url=value["url"], url_kind=value["url_kind"], file=value["file"], size=size, sha256=sha256)
