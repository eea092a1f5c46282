"""Decisions on scores: calibrated thresholds and keep-a-fraction, separate from the scores themselves."""

from oodfilter.decision.calibration import (
    MIN_CALIBRATION_IMAGES,
    Calibration,
    minimum_calibration_images,
    recall_threshold,
)
from oodfilter.decision.keep_fraction import keep_fraction_decisions

__all__ = [
    "MIN_CALIBRATION_IMAGES",
    "Calibration",
    "keep_fraction_decisions",
    "minimum_calibration_images",
    "recall_threshold",
]
