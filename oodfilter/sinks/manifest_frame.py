r"""A manifest as a table: a pandas DataFrame or a pyarrow Table, for analysis in notebooks and pipelines.

The columns are the documented ones, in order: ``path``, ``status``, ``error``, ``ood_score``,
``is_ood``, ``top_class``, ``top_prob``, then each optional column (one a newer row type adds, such as a
label check's) that holds a value in at least one row. The rows are read and validated by the one
manifest reader (:func:`oodfilter.sinks.manifest.iter_manifest`): JSONL, CSV and Parquet give the same
table, each path's first row only, relative paths as stored (resolve them with
:func:`oodfilter.sinks.row_paths.resolve_row_path`).

File names that are not UTF-8 keep their bytes, as each form can hold them: in pandas a name is the
``str`` Python's own ``os.listdir`` gives (each undecodable byte a lone surrogate, so ``open(path)``
opens the file); in Arrow a text column holding such a name is ``binary`` (the bytes), as in a Parquet
manifest, and ``string`` otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from oodfilter.errors import InputError, MissingDependencyError
from oodfilter.sinks.manifest import check_manifest_file, iter_manifest, manifest_format, no_rows_error, sidecar
from oodfilter.sinks.names import arrow_text_column
from oodfilter.sinks.rows import COLUMNS, ManifestRow

if TYPE_CHECKING:
    import pandas
    import pyarrow

DOCUMENTED = ("path", "status", "error", "ood_score", "is_ood", "top_class", "top_prob")
FORMS = ("pandas", "arrow", "rows")
_NUMBERS = ("ood_score", "top_prob")


@overload
def read_manifest(path: str | Path, *, as_: Literal["pandas"] = ...) -> pandas.DataFrame: ...
@overload
def read_manifest(path: str | Path, *, as_: Literal["arrow"]) -> pyarrow.Table: ...
@overload
def read_manifest(path: str | Path, *, as_: Literal["rows"]) -> list[ManifestRow]: ...


def read_manifest(path: str | Path, *, as_: str = "pandas") -> Any:
    """Read a manifest (``.jsonl``, ``.csv`` or ``.parquet``) as a pandas DataFrame, a pyarrow Table, or rows.

    Example::

        frame = oodfilter.read_manifest("oodfilter-scan.jsonl")
        frame[frame.is_ood == True].sort_values("ood_score", ascending=False).head()

    Args:
        path: The manifest.
        as_: ``"pandas"`` (a DataFrame: text columns ``object``, scores ``float64`` with NaN for none,
            ``is_ood`` pandas' nullable ``boolean``), ``"arrow"`` (a Table: ``string`` or ``binary`` text,
            ``double`` scores, ``bool`` decisions, nulls for none), or ``"rows"`` (a list of
            :class:`~oodfilter.sinks.rows.ManifestRow`, as :func:`oodfilter.sinks.manifest.read_manifest`).

    Raises:
        InputError: an unknown ``as_`` or format, a path that is not a file (missing, a folder), a manifest
            with no rows (empty, or not a manifest at all), or a record that is not a valid row (names the
            file and line).
        MissingDependencyError: pandas (or pyarrow) is not installed; the message says what to install.

    """
    if as_ not in FORMS:
        raise InputError(f"read_manifest(as_={as_!r}): choose one of {', '.join(FORMS)}")
    module = {"pandas": "pandas", "arrow": "pyarrow"}.get(as_)
    library = _require(module) if module is not None else None  # before reading: a missing one fails at once
    if not (manifest_format(path) == ".parquet" and sidecar(path, "partial.jsonl").is_file()):  # a scan running
        check_manifest_file(path)
    rows = list(iter_manifest(path))
    if not rows:
        raise no_rows_error(path)
    if library is None:
        return rows
    columns = _columns(rows)
    if as_ == "arrow":
        return library.table({name: _arrow_column(library, name, values) for name, values in columns.items()})
    return library.DataFrame({name: _pandas_column(library, name, values) for name, values in columns.items()})


def _columns(rows: list[ManifestRow]) -> dict[str, list[Any]]:
    """Column name → values: the documented columns, then optional ones some row gives a value."""
    records = [row.to_dict() for row in rows]
    names = dict.fromkeys([*COLUMNS, *(name for record in records for name in record)])  # in order, once each
    optional = [name for name in names if name not in DOCUMENTED and any(r.get(name) is not None for r in records)]
    return {name: [record.get(name) for record in records] for name in (*DOCUMENTED, *optional)}


def _kind(values: Iterable[Any]) -> str:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return "bool"
    if present and all(isinstance(value, int | float) and not isinstance(value, bool) for value in present):
        return "number"
    return "text"


def _pandas_column(pd: Any, name: str, values: list[Any]) -> Any:
    kind = "number" if name in _NUMBERS else "bool" if name == "is_ood" else _kind(values)
    if kind == "number":
        return pd.Series([float("nan") if value is None else float(value) for value in values], dtype="float64")
    if kind == "bool":
        return pd.Series(values, dtype="boolean")
    return pd.Series(values, dtype="object")


def _arrow_column(pa: Any, name: str, values: list[Any]) -> Any:
    kind = "number" if name in _NUMBERS else "bool" if name == "is_ood" else _kind(values)
    if kind == "number":
        return pa.array(values, type=pa.float64())
    if kind == "bool":
        return pa.array(values, type=pa.bool_())
    return arrow_text_column(pa, [None if value is None else str(value) for value in values])


def _require(module: str) -> Any:
    install = {"pandas": "'oodfilter[pandas]' (pandas)", "pyarrow": "'oodfilter[parquet]' (pyarrow)"}[module]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(f"read_manifest(as_={'arrow' if module == 'pyarrow' else module!r}) needs "
                                     f"{module}: pip install {install}, or pass as_='rows' for plain rows") from error
