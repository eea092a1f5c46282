"""Per-class rates: for each top class, how many images, how many flagged, the share, the median score.

A class name that is wrong, or an ID class missing from the list, shows up as one top class with a much
higher OOD share than the rest: images of the missing class land on their nearest listed name and are
flagged. :func:`suspicious_classes` points those out.
"""

from __future__ import annotations

import statistics
from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from oodfilter.sinks.rows import ManifestRow

# A class is pointed out when at least this many images have it as top class, at least half of them
# are flagged, and its flagged share is at least twice the share over all classes.
MIN_IMAGES = 5
MIN_SHARE = 0.5
RATIO = 2.0


@dataclass(frozen=True)
class ClassRate:
    """One top class of a scan.

    Attributes:
        name: The class name (the top class of the rows).
        images: Ok rows with this top class.
        flagged: Those decided OOD.
        decided: Those with a decision (flagged share is over these).
        median_score: The median OOD score of the rows.

    """

    name: str
    images: int
    flagged: int
    decided: int
    median_score: float

    @property
    def share(self) -> float | None:
        """Flagged share of the decided rows (None when none is decided)."""
        return self.flagged / self.decided if self.decided else None


class ClassRateCounter:
    """Per-class rates accumulated one row at a time (8 bytes per ok row: its score, for the median)."""

    def __init__(self) -> None:
        self._scores: dict[str, array[float]] = {}
        self._flagged: dict[str, int] = defaultdict(int)
        self._decided: dict[str, int] = defaultdict(int)

    def add(self, row: ManifestRow) -> None:
        """Count one row (error rows are skipped)."""
        if not row.ok:
            return
        name = row.top_class or "?"
        self._scores.setdefault(name, array("d")).append(row.score)
        self._decided[name] += row.is_ood is not None
        self._flagged[name] += row.is_ood is True

    def scores(self) -> dict[str, array[float]]:
        """Return each class's scores so far, in the order added (the counter's own arrays, not copies)."""
        return dict(self._scores)

    def rates(self) -> list[ClassRate]:
        """Return the rates so far, most images first (ties by name)."""
        rates = [ClassRate(name, len(values), self._flagged[name], self._decided[name], statistics.median(values))
                 for name, values in self._scores.items()]
        return sorted(rates, key=lambda rate: (-rate.images, rate.name))


def class_rates(rows: Iterable[ManifestRow]) -> list[ClassRate]:
    """Rates of every top class over the ok rows, most images first (ties by name)."""
    counter = ClassRateCounter()
    for row in rows:
        counter.add(row)
    return counter.rates()


def suspicious_classes(rates: list[ClassRate]) -> list[ClassRate]:
    """Classes whose flagged share stands out: likely a wrong class name or a class missing from the list."""
    decided = sum(rate.decided for rate in rates)
    if not decided:
        return []
    overall = sum(rate.flagged for rate in rates) / decided
    return [rate for rate in rates if rate.decided >= MIN_IMAGES and rate.share is not None
            and rate.share >= MIN_SHARE and rate.share >= RATIO * overall]


def suspicious_note(rates: list[ClassRate]) -> str | None:
    """One sentence naming the suspicious classes and what to check, or None."""
    found = suspicious_classes(rates)
    if not found:
        return None
    listed = ", ".join(f"'{rate.name}' ({rate.flagged}/{rate.decided} flagged)" for rate in found[:5])
    return (f"{listed}: far more of the images whose nearest class is this are flagged than elsewhere; check the "
            "class name's spelling and meaning, or whether a class of your data is missing from the list")
