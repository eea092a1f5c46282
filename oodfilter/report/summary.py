"""What a report shows, computed from manifest rows alone (no image is opened here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oodfilter.report.class_rates import ClassRate, class_rates
from oodfilter.sinks.rows import ManifestRow


@dataclass
class ReportData:
    """Everything the page shows except the thumbnails.

    Attributes:
        counts: total, ok, errors, ood, id, undecided.
        boundary: The score at which decisions flip (the threshold, 0.5 for CTW, else estimated), or None.
        most_ood / most_id / borderline: Rows for the galleries.
        errors: Error rows.
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
    scores: list[float] = field(default_factory=list)


def decision_boundary(rows: list[ManifestRow], meta: dict[str, Any]) -> float | None:
    """Return the score where decisions flip.

    That is the threshold if one was used (given or calibrated), the highest kept score of a
    ``--keep-fraction`` scan, 0.5 for CTW, and otherwise the midpoint between the highest-scored ID row
    and the lowest-scored OOD row (ATD decides per image, so its boundary on the score is only approximate).
    """
    if meta.get("threshold") is not None:
        return float(meta["threshold"])
    if meta.get("keep_boundary") is not None:
        return float(meta["keep_boundary"])
    if meta.get("method") == "ctw":
        return 0.5
    id_scores = [r.score for r in rows if r.is_ood is False]
    ood_scores = [r.score for r in rows if r.is_ood is True]
    if not id_scores or not ood_scores:
        return None
    return (max(id_scores) + min(ood_scores)) / 2


def summarise(rows: list[ManifestRow], meta: dict[str, Any], *, per_gallery: int = 24) -> ReportData:
    """Compute counts, the decision boundary and the gallery rows from manifest rows."""
    ok = [r for r in rows if r.status == "ok"]
    errors = [r for r in rows if r.status != "ok"]
    by_score = sorted(ok, key=lambda r: r.score)
    boundary = decision_boundary(ok, meta)
    borderline = sorted(ok, key=lambda r: abs(r.score - boundary))[:per_gallery] if boundary is not None \
        else []
    return ReportData(
        counts={
            "total": len(rows),
            "ok": len(ok),
            "errors": len(errors),
            "ood": sum(r.is_ood is True for r in ok),
            "id": sum(r.is_ood is False for r in ok),
            "undecided": sum(r.is_ood is None for r in ok),
        },
        boundary=boundary,
        most_ood=by_score[::-1][:per_gallery],
        most_id=by_score[:per_gallery],
        borderline=sorted(borderline, key=lambda r: r.score),
        errors=errors,
        per_class=class_rates(ok),
        scores=[r.score for r in ok],
    )
