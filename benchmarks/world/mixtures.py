"""Scan-like mixtures of the world's evaluation images, and the figures a filter is judged by on them.

A user scans a folder that holds their ID images and some OOD images mixed in. Here a *scan* is the
ID images of one half of the held-out ID set (the other half is the reference a threshold is calibrated
on, never scanned) plus OOD images: the whole near-OOD or DTD set, or a subset drawn so that OOD is 10%,
30% or 50% of the folder. Subsets are drawn by a generator seeded from (seed, set, share), so a seed
always sees the same folders, and each seed sees different ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oodfilter.decision import recall_threshold
from oodfilter.evaluate.metrics import auroc, fpr_at_95_tpr

FRACTIONS = (0.1, 0.3, 0.5)
ID_RECALL = 0.95


@dataclass(frozen=True)
class Split:
    """Indices into the held-out ID images: the calibration reference (never scanned) and the scanned ones."""

    calibration: np.ndarray
    scan: np.ndarray


@dataclass(frozen=True)
class Scenario:
    """One scan folder: the scanned ID images plus ``ood_index`` of the OOD set ``ood_set``."""

    name: str  # "near" / "dtd" (the whole set), "near 10%", ...
    ood_set: str
    ood_index: np.ndarray
    fraction: float | None  # the OOD share asked for; None for the whole set


def split_id(count: int, seed: int) -> Split:
    """Split ``count`` held-out ID images at random (seeded) into a calibration half and a scanned half."""
    order = np.random.default_rng([seed, 7919]).permutation(count)
    half = count // 2
    return Split(calibration=np.sort(order[:half]), scan=np.sort(order[half:]))


def ood_count(id_count: int, fraction: float) -> int:
    """How many OOD images make ``fraction`` of a folder that holds ``id_count`` ID images."""
    if not 0 < fraction < 1:
        raise ValueError(f"an OOD share must be in (0, 1), got {fraction}")
    return max(1, round(id_count * fraction / (1 - fraction)))


def scenarios(id_count: int, ood_sizes: dict[str, int], seed: int,
              fractions: tuple[float, ...] = FRACTIONS) -> list[Scenario]:
    """The whole-set scans and the mixtures of every OOD set in ``ood_sizes`` (set name → its size)."""
    out = []
    for set_number, (name, size) in enumerate(ood_sizes.items()):
        out.append(Scenario(name, name, np.arange(size), None))
        for fraction in fractions:
            count = ood_count(id_count, fraction)
            if count > size:
                raise ValueError(f"{count} {name} images needed for {fraction:.0%} OOD; the set has {size}")
            rng = np.random.default_rng([seed, set_number, round(1000 * fraction)])
            out.append(Scenario(f"{name} {fraction:.0%}", name, np.sort(rng.choice(size, count, replace=False)),
                                fraction))
    return out


def scan_metrics(id_scores: np.ndarray, ood_scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC and FPR95 (ID positive, CLIPN convention) of one scan; with ``threshold`` (``is_ood = score >
    threshold``, calibrated elsewhere) the share of OOD images caught and of scanned ID images kept."""
    return {"auroc": auroc(id_scores, ood_scores), "fpr95": fpr_at_95_tpr(id_scores, ood_scores),
            "caught": float((ood_scores > threshold).mean()), "id_kept": float((id_scores <= threshold).mean())}


def calibrated_threshold(calibration_scores: np.ndarray, recall: float = ID_RECALL) -> float:
    """The threshold that keeps ``recall`` of the calibration images (oodfilter's own calibration rule)."""
    return recall_threshold(calibration_scores, recall)
