"""What a report shows, computed from manifest rows alone (no image is opened here).

The galleries follow the scan's decisions: "most OOD" are the highest-scored rows it flagged, "most
in-distribution" the lowest-scored rows it kept, and the two strips nearest the boundary are the flagged rows
with the lowest scores and the kept rows with the highest (see :class:`ReportData`). A row without a decision
(``is_ood`` None) is in none of them.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
        most_ood: The highest-scored rows decided OOD (flagged), highest first.
        near_flagged: The lowest-scored rows decided OOD: flagged, but nearest the boundary (nearest first).
        near_kept: The highest-scored rows decided in-distribution: kept, but nearest the boundary (nearest first).
        most_id: The lowest-scored rows decided in-distribution (kept), lowest first.
        errors: Error rows (the first :data:`MAX_ERRORS_SHOWN` of a streamed summary; ``counts`` has them all).
        per_class: Per top class: images, flagged, share, median score (most images first).
        scores: Every ok row's score (for the histogram).
        class_scores: Every ok row's score by its top class (the same numbers as ``scores``, grouped).
        browse: Ok rows for the page's browsable grid: all of them up to ``browse`` of :func:`summarise_stream`,
            else that many spread evenly over the manifest (every k-th ok row).

    For a threshold, a calibrated threshold, a keep-fraction boundary or CTW (whose score is the no-probability
    it compares with 0.5) the two ``near_*`` strips are exactly the rows nearest the boundary on either side.
    ATD compares each image's score with a bar of its own (its best class's yes-probability times that class's
    probability), which the manifest does not store: there they are the flagged rows scored lowest and the kept
    rows scored highest, the decisions a change of score would flip first.
    """

    counts: dict[str, int]
    boundary: float | None
    most_ood: list[ManifestRow]
    most_id: list[ManifestRow]
    near_flagged: list[ManifestRow] = field(default_factory=list)
    near_kept: list[ManifestRow] = field(default_factory=list)
    errors: list[ManifestRow] = field(default_factory=list)
    per_class: list[ClassRate] = field(default_factory=list)
    scores: Sequence[float] = field(default_factory=list)
    class_scores: Mapping[str, Sequence[float]] = field(default_factory=dict)
    browse: list[ManifestRow] = field(default_factory=list)


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


def summarise(rows: Iterable[ManifestRow], meta: dict[str, Any], *, per_gallery: int = 24, browse: int = 0
              ) -> ReportData:
    """Compute counts, the decision boundary and the gallery rows from manifest rows (every error row kept)."""
    listed = list(rows)
    return summarise_stream(lambda: iter(listed), meta, per_gallery=per_gallery, max_errors=len(listed),
                            browse=browse)


def summarise_stream(
    rows: Callable[[], Iterator[ManifestRow]], meta: dict[str, Any], *, per_gallery: int = 24,
    max_errors: int | None = None, browse: int = 0,
) -> ReportData:
    """Compute what :func:`summarise` does, holding only what the page shows.

    One pass over ``rows()``, two when the grid is a sample of a larger scan.

    Memory: 8 bytes per ok row (its score, for the histogram, the per-class medians and the page's threshold
    slider) plus the gallery rows, ``browse`` grid rows and the first ``max_errors`` error rows (default
    :data:`MAX_ERRORS_SHOWN`); ``counts["errors"]`` counts them all.
    """
    max_errors = MAX_ERRORS_SHOWN if max_errors is None else max_errors
    counts = dict.fromkeys(("total", "ok", "errors", "ood", "id", "undecided"), 0)
    scores = array("d")
    per_class = ClassRateCounter()
    extremes = _Extremes()
    errors: list[ManifestRow] = []
    flagged, kept = _Ends(per_gallery), _Ends(per_gallery)
    first: list[ManifestRow] = []
    for position, row in _positioned_ok(rows(), counts, scores, per_class, extremes, errors, max_errors):
        if row.is_ood is True:
            flagged.add(position, row)
        elif row.is_ood is False:
            kept.add(position, row)
        if len(first) < browse:
            first.append(row)
    near_flagged, most_ood = flagged.ends()
    most_id, near_kept = kept.ends()
    grid = first if counts["ok"] <= browse else _every_kth(_positioned(rows()), counts["ok"], browse)
    return ReportData(counts=counts, boundary=_boundary(meta, extremes), most_ood=most_ood, most_id=most_id,
                      near_flagged=near_flagged, near_kept=near_kept, errors=errors, per_class=per_class.rates(),
                      scores=scores, class_scores=per_class.scores(), browse=grid)


def _every_kth(rows: Iterator[tuple[int, ManifestRow]], total: int, count: int) -> list[ManifestRow]:
    """Return ``count`` of ``total`` positioned rows, at positions ``i * total // count`` (evenly spread)."""
    wanted = {i * total // count for i in range(count)}
    return [row for position, row in rows if position in wanted]


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


class _Ends:
    """The ``k`` lowest-scored and the ``k`` highest-scored of the rows added, in one pass.

    Equal to ``sorted(rows, key=score)[:k]`` and ``sorted(rows, key=score)[::-1][:k]`` (stable sort in manifest
    order: ties go to the first row among the lowest scores and to the last row among the highest).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._low: list[tuple[float, int, ManifestRow]] = []  # max-heap of the k lowest, as (-score, -position)
        self._high: list[tuple[float, int, ManifestRow]] = []  # min-heap of the k highest, as (score, position)

    def add(self, position: int, row: ManifestRow) -> None:
        if self.k <= 0:
            return
        for heap, item in ((self._low, (-row.score, -position, row)), (self._high, (row.score, position, row))):
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)

    def ends(self) -> tuple[list[ManifestRow], list[ManifestRow]]:
        """Return the lowest-scored rows (ascending) and the highest-scored rows (descending)."""
        lowest = [row for _, _, row in sorted(self._low, key=lambda item: (-item[0], -item[1]))]
        highest = [row for _, _, row in sorted(self._high, key=lambda item: (item[0], item[1]), reverse=True)]
        return lowest, highest
