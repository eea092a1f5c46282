"""Which file a manifest row names: the one home of "relative to what" for every reader of a manifest.

A scan writes each input as it was found: an absolute path, a URL, or a path relative to the folder the
scan ran in, which ``<manifest>.meta.json`` records as ``cwd``. A relative row is therefore resolved from
that recorded folder, never from the folder the reader happens to run in (eval, report, ManifestFilter,
``--calibrate-on``, ``export-features`` and rescore all call :func:`resolve_row_path`). A manifest without a
recorded folder (written by hand or by another tool) is read like a label file or caption table: relative
to its own folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oodfilter.data.remote import is_url
from oodfilter.sinks.manifest import read_meta
from oodfilter.sinks.rows import ManifestRow


def manifest_base(manifest: str | Path, meta: dict[str, Any] | None = None) -> str:
    """Return the folder ``manifest``'s relative row paths are relative to.

    That is the folder its scan ran in (``cwd`` in its meta), else the manifest's own folder.

    Args:
        manifest: The manifest file.
        meta: Its meta, when already read (read from ``<manifest>.meta.json`` otherwise).

    Raises:
        InputError: the meta file is damaged (see :func:`~oodfilter.sinks.manifest.read_meta`).

    """
    recorded = (read_meta(manifest) if meta is None else meta).get("cwd")
    if isinstance(recorded, str) and recorded:
        return recorded
    return os.path.dirname(os.path.abspath(manifest))


def resolve_row_path(path: str, base: str) -> str:
    """Return the file or URL a row's ``path`` names: URLs and absolute paths as they are, else under ``base``."""
    if is_url(path) or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def is_relative_row(path: str) -> bool:
    """Whether a row's path depends on the folder it is resolved from (not a URL, not absolute)."""
    return not is_url(path) and not os.path.isabs(path)


def resolved_paths(manifest: str | Path, rows: Iterable[ManifestRow]) -> list[str]:
    """Return the resolved path of each of ``rows`` of ``manifest`` (see :func:`resolve_row_path`)."""
    base = manifest_base(manifest)
    return [resolve_row_path(row.path, base) for row in rows]
