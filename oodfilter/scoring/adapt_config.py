"""What the dataset-aware rescoring pass takes (:class:`AdaptConfig`); light, so the CLI checks it before torch loads.

The pass itself is :func:`oodfilter.scoring.adaptive.adaptive_scores`, which re-exports this class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from oodfilter.errors import InputError


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of the dataset-aware pass; the defaults are usable as they are.

    Attributes:
        negatives: At most this many negative proxies (k-means centroids of the seed images).
        negative_fraction: At most this share of the dataset seeds the negatives: the images the first pass
            rates most confidently OOD, among those it rates OOD at all.
        max_negative_seeds: At most this many seed images for the negatives, whatever the dataset's size.
        positives_per_class: Each class's positive proxy is the mean of at most this many of the images
            the first pass rates most confidently ID with that top class; 0: no positive proxies (the
            default: on the dev mixture of ``benchmarks/world/adapt_defaults.py`` they lowered the AUROC
            in every case measured).
        shift: Move the image proxies across the modality gap (minus the mean image feature, plus the mean
            class vector) so that they compete with the class vectors on the same inter-modal scale.
        vet_negatives: Keep only the negative proxies that the first pass itself rates OOD when scored as an
            image (a safeguard for clean datasets, whose most OOD-looking images are borderline ID).
        threshold: Decide ``is_ood = ood_score > threshold`` on the adapted scores; None: no decision.
        min_images: Refuse datasets smaller than this (nothing to learn from a handful of images).
        chunk: Feature rows read and scored per step (bounds memory).
        seed: Seed of the k-means initialisation.
        kmeans_iterations: At most this many k-means (Lloyd) iterations.

    """

    negatives: int = 32
    negative_fraction: float = 0.02
    max_negative_seeds: int = 4096
    positives_per_class: int = 0
    shift: bool = True
    vet_negatives: bool = True
    threshold: float | None = None
    min_images: int = 20
    chunk: int = 4096
    seed: int = 0
    kmeans_iterations: int = 30

    def __post_init__(self) -> None:
        """Refuse values that cannot run (an :class:`~oodfilter.errors.InputError` naming the option)."""
        for name in ("negatives", "max_negative_seeds", "positives_per_class", "min_images", "chunk",
                     "kmeans_iterations"):
            value, least = getattr(self, name), 0 if name == "positives_per_class" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InputError(f"adapt option {name} must be a whole number of at least {least}, got {value!r}")
        if not 0.0 < self.negative_fraction <= 0.5:
            raise InputError(f"adapt option negative_fraction must be in (0, 0.5], got {self.negative_fraction}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise InputError("adapt option threshold must be a finite number")

    def as_meta(self) -> dict[str, Any]:
        """Return the settings as a JSON-able dict (for a manifest's meta)."""
        return asdict(self)
