"""The manifest row: defined once, built once from scores, and converted for every engine and format.

Every engine hands the same things to :func:`build_rows` (the inputs of a batch, the ones that failed and
why, and the :class:`~oodfilter.scoring.result.ScoreResult` of the rest), and every writer and reader
speaks :class:`ManifestRow`. Ray moves rows between processes as numeric columns
(:mod:`oodfilter.sinks.row_columns`; kept apart so that this module needs no numpy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from oodfilter.deprecation import warn_deprecated
from oodfilter.errors import InputError
from oodfilter.messages import excerpt
from oodfilter.sinks.names import is_storable

if TYPE_CHECKING:  # rows sit below scoring: no runtime import, so either may be imported first
    from oodfilter.scoring.result import ScoreResult

STATUSES = ("ok", "error")


@dataclass
class ManifestRow:
    """One row per input: ``status`` is ``ok`` (scores set) or ``error`` (``error`` set).

    Attributes:
        path: The input's id (its path as given).
        status: ``ok`` or ``error``.
        error: Why the input could not be scored (error rows).
        ood_score: The score, higher = more OOD (ok rows).
        is_ood: The decision, or None when the method gives none without a threshold.
        top_class: The most likely ID class (ok rows).
        top_prob: Its probability under the yes classifier (ok rows).
        folder_class: The class its folder names, when the class list came from the folders
            (``--classes-from-folders``); None otherwise.
        label_issue: True when the image looks confidently like another class than its folder's
            (:func:`oodfilter.scan.label_check.is_label_issue`); None when there is no folder class.

    """

    path: str
    status: str
    error: str | None = None
    ood_score: float | None = None
    is_ood: bool | None = None
    top_class: str | None = None
    top_prob: float | None = None
    folder_class: str | None = None
    label_issue: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the row as a mapping in column order; the label-check columns only when the row has them.

        Manifests of scans without ``--classes-from-folders`` keep the columns they always had.
        """
        record = asdict(self)
        if not self.has_label_columns:
            for column in LABEL_COLUMNS:
                del record[column]
        return record

    @property
    def has_label_columns(self) -> bool:
        """Whether the row carries the label check's columns (a scan with the class list from folders)."""
        return self.folder_class is not None or self.label_issue is not None

    @property
    def ok(self) -> bool:
        """Whether the input was scored."""
        return self.status == "ok"

    @property
    def score(self) -> float:
        """The OOD score of an ``ok`` row (raises on an error row, which has none)."""
        if self.ood_score is None:
            raise ValueError(f"row {self.path} has no score (status {self.status}: {self.error})")
        return self.ood_score

    def __getitem__(self, column: str) -> Any:
        """Return a column, dict-style (deprecated: rows were dicts in 0.1); use attributes."""
        warn_deprecated("manifest row[column]", "row.<column>")
        return getattr(self, column)

    def get(self, column: str, default: Any = None) -> Any:
        """Return a column or ``default`` (deprecated: rows were dicts in 0.1); use attributes."""
        warn_deprecated("manifest row.get(column)", "row.<column>")
        return getattr(self, column, default)


# The label check's columns: written only by scans whose class list came from folders, optional when read.
LABEL_COLUMNS: tuple[str, ...] = ("folder_class", "label_issue")
# The columns every manifest has.
COLUMNS: tuple[str, ...] = tuple(name for name in ManifestRow.__dataclass_fields__ if name not in LABEL_COLUMNS)
ALL_COLUMNS: tuple[str, ...] = (*COLUMNS, *LABEL_COLUMNS)


def columns_of(rows: Sequence[ManifestRow]) -> tuple[str, ...]:
    """Return the columns a file of ``rows`` needs: :data:`ALL_COLUMNS` when any row has a label check."""
    return ALL_COLUMNS if any(row.has_label_columns for row in rows) else COLUMNS


def build_rows(
    paths: Sequence[str],
    errors: Sequence[tuple[int, str]],
    scored: Sequence[int],
    result: ScoreResult | None,
) -> list[ManifestRow]:
    """Build the rows of one batch, in the order of ``paths``.

    Args:
        paths: The batch's inputs (or all inputs: only the indices named below get rows).
        errors: (index into ``paths``, reason) for each input that failed.
        scored: Indices into ``paths`` of the scored inputs, in the order of ``result``'s rows.
        result: Their scores, or None when nothing in the batch was scored.

    """
    rows = {index: ManifestRow(path=paths[index], status="error", error=reason) for index, reason in errors}
    if result is not None:
        names = result.top_class_names
        decisions = result.is_ood.tolist() if result.is_ood is not None else [None] * len(result)
        for position, index in enumerate(scored):
            score = float(result.ood_score[position])
            if not math.isfinite(score):
                rows[index] = ManifestRow(path=paths[index], status="error", error=_not_finite(result.method, score))
                continue
            rows[index] = ManifestRow(
                path=paths[index],
                status="ok",
                ood_score=score,
                is_ood=None if decisions[position] is None else bool(decisions[position]),
                top_class=names[position],
                top_prob=float(result.top_prob[position]),
            )
    return [rows[index] for index in sorted(rows)]


def _not_finite(method: str, score: float) -> str:
    return (f"the {method} score is {score} (not finite): the model or its no-branch produced invalid values; "
            "check the model's weights (e.g. re-convert or re-train the bundle)")


def row_from_record(record: Mapping[str, Any], where: str) -> ManifestRow:
    """Validate one stored record (a JSON object, a CSV row parsed to values, a Parquet row) into a row.

    Args:
        record: Column → value, values already typed (None for empty).
        where: The file and line, for messages (``scan.jsonl line 7``).

    Raises:
        InputError: a column is missing or holds a value of the wrong type; the message names ``where``
            and the column.

    """
    missing = [column for column in COLUMNS if column not in record]
    if missing:
        raise InputError(f"manifest {where}: missing column(s) {', '.join(missing)}; is this an oodfilter manifest?")
    values = {column: _checked(column, record[column], where) for column in COLUMNS}
    values.update({column: _checked(column, record[column], where) for column in LABEL_COLUMNS
                   if column in record})  # absent in manifests of scans without a label check
    if values["status"] not in STATUSES:
        raise InputError(f"manifest {where}: column 'status' must be 'ok' or 'error', got {excerpt(values['status'])}")
    if values["status"] == "ok" and (values["ood_score"] is None or values["top_class"] is None):
        raise InputError(f"manifest {where}: an 'ok' row needs 'ood_score' and 'top_class'")
    return ManifestRow(**values)


_TYPES: dict[str, tuple[type, ...]] = {
    "path": (str,), "status": (str,), "error": (str,), "ood_score": (float, int), "is_ood": (bool,),
    "top_class": (str,), "top_prob": (float, int), "folder_class": (str,), "label_issue": (bool,),
}


def _checked(column: str, value: Any, where: str) -> Any:
    if value is None:
        if column in ("path", "status"):
            raise InputError(f"manifest {where}: column '{column}' is empty")
        return None
    expected = _TYPES[column]
    if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
        raise InputError(f"manifest {where}: column '{column}' holds {excerpt(value)} ({type(value).__name__}); "
                         f"expected {' or '.join(t.__name__ for t in expected)}")
    if isinstance(value, str) and not is_storable(value):
        raise InputError(f"manifest {where}: column '{column}' holds text that no file name decodes to (a lone "
                         "surrogate); fix or remove the row")
    if column in ("ood_score", "top_prob"):
        try:
            number = float(cast(float, value))
        except OverflowError:  # an integer too large for a float (a hand-edited or hostile manifest)
            number = math.inf
        if not math.isfinite(number):
            raise InputError(f"manifest {where}: column '{column}' is not a finite number ({excerpt(value)})")
        return number
    return value
