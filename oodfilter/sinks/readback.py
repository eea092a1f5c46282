"""What a scan reads back from its manifest, streamed.

The paths already done (resume) and the tally of the rows of this scan's files (summary, actions). Nothing
here holds a row longer than it takes to count it, and nothing imports torch, so reading back a manifest
of a million rows stays small (benchmarks/scale.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from oodfilter.report.class_rates import ClassRate, ClassRateCounter
from oodfilter.sinks.manifest import iter_manifest


def done_paths(manifest: str | Path) -> set[str]:
    """Return the paths a manifest already has a row for (ok or error): what a resume skips."""
    return {row.path for row in iter_manifest(manifest)}


def ok_row_count(manifest: str | Path) -> int:
    """Return how many ok rows a manifest has."""
    return sum(row.ok for row in iter_manifest(manifest))


def ok_paths(manifest: str | Path) -> list[str]:
    """Return the paths of a manifest's ok rows, in order (the rows its stored features belong to)."""
    return [row.path for row in iter_manifest(manifest) if row.ok]


@dataclass
class ManifestTally:
    """The rows of a scan's files, counted.

    Attributes:
        total: Files with a row.
        ok: Rows scored.
        ood: Rows decided OOD.
        in_distribution: Rows decided in-distribution.
        per_class: Per top class rates (see :func:`oodfilter.report.class_rates.class_rates`).
        selected: Paths of the ok rows whose decision is the selected one (the files an action acts on).
        label_issues: Ok rows whose label check says they may be mislabelled (``label_issue`` True).

    """

    total: int = 0
    ok: int = 0
    ood: int = 0
    in_distribution: int = 0
    per_class: list[ClassRate] = field(default_factory=list)
    selected: set[str] = field(default_factory=set)
    label_issues: int = 0

    @property
    def errors(self) -> int:
        """Rows that are errors."""
        return self.total - self.ok


def tally_manifest(manifest: str | Path, wanted: Iterable[str], select_ood: bool | None = None) -> ManifestTally:
    """Count the manifest's rows of the ``wanted`` paths, in one pass (a path's first row counts).

    Args:
        manifest: The manifest.
        wanted: The paths of this scan's files (rows of other files are not counted).
        select_ood: Collect the paths of the ok rows decided OOD (True) or in-distribution (False) into
            :attr:`ManifestTally.selected`; None collects nothing.

    """
    pending = set(wanted)
    tally = ManifestTally()
    rates = ClassRateCounter()
    for row in iter_manifest(manifest):
        if row.path not in pending:
            continue
        pending.discard(row.path)
        tally.total += 1
        if not row.ok:
            continue
        tally.ok += 1
        tally.ood += row.is_ood is True
        tally.in_distribution += row.is_ood is False
        tally.label_issues += row.label_issue is True
        rates.add(row)
        if select_ood is not None and row.is_ood is select_ood:
            tally.selected.add(row.path)
    tally.per_class = rates.rates()
    return tally
