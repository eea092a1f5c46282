"""Negative-label mining (NegLabel, docs/method.md §5): keep the candidates farthest from every ID class."""

from __future__ import annotations

import math

import numpy as np
import torch

from oodfilter.errors import InputError
from oodfilter.text.class_vectors import ClassVectors


def mine_negatives(
    id_index: ClassVectors, candidates: torch.Tensor, *, ratio: float = 0.15, quantile: float = 0.95
) -> torch.Tensor:
    """Return the indices of the candidates kept as negative labels, farthest first.

    Each candidate's closeness to the ID classes is the ``quantile`` of its cosines to all C class
    vectors, read off a FAISS query of the ID class index (the k-th largest cosine, k = ⌈(1 − quantile)·C⌉);
    the ``ratio`` of candidates with the lowest closeness are kept.

    Args:
        id_index: The ID class vectors (its FAISS index answers the query).
        candidates: (M, D) normalised candidate vectors.
        ratio: Share of candidates kept.
        quantile: Which quantile of the cosines to all ID classes measures closeness.
    """
    if not 0 < ratio <= 1:
        raise InputError(f"ratio must be in (0, 1], got {ratio}")
    k = max(1, math.ceil((1 - quantile) * len(id_index)))
    cosines, _ = id_index.nearest_classes(candidates, k=k)  # (M, k), decreasing
    closeness = torch.from_numpy(np.ascontiguousarray(cosines[:, -1]))  # (M,) the quantile
    keep = max(1, round(ratio * candidates.shape[0]))
    return torch.argsort(closeness, stable=True)[:keep]
