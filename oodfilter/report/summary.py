"""What a report shows, computed from manifest rows alone (no image is opened here)."""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from oodfilter.report.class_rates import ClassRate, ClassRateCounter
from oodfilter.sinks.rows import ManifestRow


@dataclass
class ReportData:
    """Everything the page shows except the thumbnails.

    Attributes:
        counts: total, ok, errors, ood, id, undecided.
        boundary: The score at which decisions flip (the threshold, 0.5 for CTW, else estimated), or None.
        most_ood / most_id / borderline: Rows for the galleries.
        errors: Error rows (the first :data:`MAX_ERRORS_SHOWN` of a streamed summary; ``counts`` has them all).
        per_class: Per top class: images, flagged, share, median score (most images first).
        scores: Every ok row's score (for the histogram).
    """

    counts: dict[str, int]
    boundary: float | None
    most_ood: list[ManifestRow]
    most_id: list[ManifestRow]
    borderline: list[ManifestRow]
    errors: list[ManifestRow]
    per_class: list[ClassRate]
    scores: Sequence[float] = field(default_factory=list)


# The report lists at most this many error rows (and says how many there are).
MAX_ERRORS_SHOWN = 1000


def decision_boundary(rows: Iterable[ManifestRow], meta: dict[str, Any]) -> float | None:
    """Return the score where decisions flip.

    That is the threshold if one was used (given or calibrated), the highest kept score of a
    ``--keep-fraction`` scan, 0.5 for CTW, and otherwise the midpoint between the highest-scored ID row
    and the lowest-scored OOD row (ATD decides per image, so its boundary on the score is only approximate).
    """
    extremes = _Extremes()
    if _stated_boundary(meta) is None and meta.get("method") != "ctw":
        for row in rows:
            extremes.add(row)
    return _boundary(meta, extremes)


def summarise(rows: Iterable[ManifestRow], meta: dict[str, Any], *, per_gallery: int = 24) -> ReportData:
    """Compute counts, the decision boundary and the gallery rows from manifest rows (every error row kept)."""
    listed = list(rows)
    return summarise_stream(lambda: iter(listed), meta, per_gallery=per_gallery, max_errors=len(listed))


def summarise_stream(
    rows: Callable[[], Iterator[ManifestRow]], meta: dict[str, Any], *, per_gallery: int = 24,
    max_errors: int | None = None,
) -> ReportData:
    """Compute what :func:`summarise` does in two passes over ``rows()``, holding only what the page shows.

    Memory: 8 bytes per ok row (its score, for the histogram and the per-class medians) plus the gallery
    rows and the first ``max_errors`` error rows (default :data:`MAX_ERRORS_SHOWN`); ``counts["errors"]``
    counts them all.
    """
    max_errors = MAX_ERRORS_SHOWN if max_errors is None else max_errors
    counts = dict.fromkeys(("total", "ok", "errors", "ood", "id", "undecided"), 0)
    scores = array("d")
    per_class = ClassRateCounter()
    extremes = _Extremes()
    errors: list[ManifestRow] = []
    ok_rows = _positioned_ok(rows(), counts, scores, per_class, extremes, errors, max_errors)
    # heapq.nsmallest/nlargest equal sorted(...)[:k] with these keys (ties: first row for the lowest scores,
    # last row for the highest, as reversing a stable sort by score gives)
    lowest_and_highest = _two_ends(ok_rows, per_gallery)
    boundary = _boundary(meta, extremes)
    borderline: list[ManifestRow] = []
    if boundary is not None and per_gallery > 0:
        nearest = heapq.nsmallest(per_gallery, _positioned(rows()), key=lambda p: (abs(p[1].score - boundary), p[0]))
        borderline = sorted((row for _, row in nearest), key=lambda r: r.score)
    return ReportData(counts=counts, boundary=boundary, most_ood=lowest_and_highest[1],
                      most_id=lowest_and_highest[0], borderline=borderline, errors=errors,
                      per_class=per_class.rates(), scores=scores)


class _Extremes:
    """The highest ID score and the lowest OOD score seen."""

    def __init__(self) -> None:
        self.max_id: float | None = None
        self.min_ood: float | None = None

    def add(self, row: ManifestRow) -> None:
        if not row.ok:
            return
        if row.is_ood is False and (self.max_id is None or row.score > self.max_id):
            self.max_id = row.score
        if row.is_ood is True and (self.min_ood is None or row.score < self.min_ood):
            self.min_ood = row.score


def _stated_boundary(meta: dict[str, Any]) -> float | None:
    for key in ("threshold", "keep_boundary"):
        if meta.get(key) is not None:
            return float(meta[key])
    return None


def _boundary(meta: dict[str, Any], extremes: _Extremes) -> float | None:
    stated = _stated_boundary(meta)
    if stated is not None:
        return stated
    if meta.get("method") == "ctw":
        return 0.5
    if extremes.max_id is None or extremes.min_ood is None:
        return None
    return (extremes.max_id + extremes.min_ood) / 2


def _positioned(rows: Iterator[ManifestRow]) -> Iterator[tuple[int, ManifestRow]]:
    """Yield the ok rows with their position among the ok rows."""
    return enumerate(row for row in rows if row.status == "ok")


def _positioned_ok(rows: Iterator[ManifestRow], counts: dict[str, int], scores: array, per_class: ClassRateCounter,
                   extremes: _Extremes, errors: list[ManifestRow], max_errors: int
                   ) -> Iterator[tuple[int, ManifestRow]]:
    """Count every row as it passes and yield the ok ones with their position."""
    position = 0
    for row in rows:
        counts["total"] += 1
        if row.status != "ok":
            counts["errors"] += 1
            if len(errors) < max_errors:
                errors.append(row)
            continue
        counts["ok"] += 1
        counts["ood" if row.is_ood is True else "id" if row.is_ood is False else "undecided"] += 1
        scores.append(row.score)
        per_class.add(row)
        extremes.add(row)
        yield position, row
        position += 1


def _two_ends(rows: Iterator[tuple[int, ManifestRow]], k: int) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """Return the ``k`` lowest-scored rows (ascending) and the ``k`` highest (descending), in one pass."""
    low: list[tuple[float, int, ManifestRow]] = []  # max-heap of the k lowest, as (-score, -position)
    high: list[tuple[float, int, ManifestRow]] = []  # min-heap of the k highest, as (score, position)
    for position, row in rows:
        if k <= 0:
            continue
        low_item, high_item = (-row.score, -position, row), (row.score, position, row)
        if len(low) < k:
            heapq.heappush(low, low_item)
        elif low_item[:2] > low[0][:2]:
            heapq.heapreplace(low, low_item)
        if len(high) < k:
            heapq.heappush(high, high_item)
        elif high_item[:2] > high[0][:2]:
            heapq.heapreplace(high, high_item)
    lowest = [row for _, _, row in sorted(low, key=lambda item: (-item[0], -item[1]))]
    highest = [row for _, _, row in sorted(high, key=lambda item: (item[0], item[1]), reverse=True)]
    return lowest, highest
