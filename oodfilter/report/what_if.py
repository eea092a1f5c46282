"""What if the scan had been calibrated for another recall: kept/flagged counts from stored scores alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oodfilter.decision.calibration import Calibration, minimum_calibration_images

RECALLS = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class WhatIf:
    """The decision at one ID recall: its threshold (None when the calibration set is too small) and counts."""

    id_recall: float
    threshold: float | None
    kept: int
    flagged: int
    note: str = ""


def what_if(calibration: Calibration, scores: Sequence[float], recalls: tuple[float, ...] = RECALLS) -> list[WhatIf]:
    """For each recall, the threshold the stored calibration scores give and the scan's kept/flagged counts."""
    rows = []
    for recall in recalls:
        needed = minimum_calibration_images(recall)
        if calibration.num_images < needed:
            rows.append(WhatIf(recall, None, 0, 0, f"needs at least {needed} calibration images "
                               f"(has {calibration.num_images})"))
            continue
        threshold = calibration.threshold_at(recall)
        flagged = sum(score > threshold for score in scores)
        rows.append(WhatIf(recall, threshold, len(scores) - flagged, flagged))
    return rows
