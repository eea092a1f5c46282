"""OOD detection metrics as pure functions over score arrays (docs/method.md §6).

Scores follow oodfilter's convention: higher = more OOD. ``id_scores`` are the scores of
in-distribution samples, ``ood_scores`` those of OOD samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from oodfilter.errors import InputError

ArrayLike = Sequence[float] | np.ndarray


def _check(id_scores: ArrayLike, ood_scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    id_arr = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_arr = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_arr.size == 0 or ood_arr.size == 0:
        raise InputError("metrics need at least one in-distribution and one OOD score")
    if not (np.isfinite(id_arr).all() and np.isfinite(ood_arr).all()):
        raise InputError("scores must be finite; found NaN or infinity")
    return id_arr, ood_arr


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve for telling OOD (positive) from ID; ties count one half.

    Equals the probability that a random OOD sample scores higher than a random ID sample.
    """
    id_arr, ood_arr = _check(id_scores, ood_scores)
    scores = np.concatenate([ood_arr, id_arr])
    ranks = _average_ranks(scores)
    n_pos, n_neg = ood_arr.size, id_arr.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_95_tpr(id_scores: ArrayLike, ood_scores: ArrayLike, *, convention: str = "clipn") -> float:
    """FPR95.

    ``clipn`` (CLIPN/MCM convention): the fraction of OOD samples accepted as ID at the threshold that
    keeps 95% of the ID samples. ``openood`` (OpenOOD v1.5): the fraction of ID samples rejected at the
    threshold that catches 95% of the OOD samples.
    """
    id_arr, ood_arr = _check(id_scores, ood_scores)
    if convention == "clipn":
        # The lowest threshold that accepts (score ≤ t) at least 95% of the ID samples.
        threshold = np.sort(id_arr)[math.ceil(0.95 * id_arr.size) - 1]
        return float((ood_arr <= threshold).mean())
    if convention == "openood":
        # The highest threshold that flags (score ≥ t) at least 95% of the OOD samples.
        threshold = np.sort(ood_arr)[ood_arr.size - math.ceil(0.95 * ood_arr.size)]
        return float((id_arr >= threshold).mean())
    raise InputError(f"unknown FPR95 convention '{convention}'; use 'clipn' or 'openood'")


def average_precision(positive_scores: ArrayLike, negative_scores: ArrayLike) -> float:
    """Average precision (area under the precision-recall curve, step-wise) for positives scoring high."""
    pos, neg = _check(negative_scores, positive_scores)[::-1]
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each tied group
    true_pos = np.cumsum(labels)[distinct]
    precision = true_pos / (distinct + 1)
    recall_gain = np.diff(np.r_[0.0, true_pos]) / pos.size
    return float((precision * recall_gain).sum())


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """AUPR with ID as the positive class (ID should score low, so scores are negated)."""
    id_arr, ood_arr = _check(id_scores, ood_scores)
    return average_precision(-id_arr, -ood_arr)


def aupr_out(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """AUPR with OOD as the positive class."""
    id_arr, ood_arr = _check(id_scores, ood_scores)
    return average_precision(ood_arr, id_arr)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # rank of the last member of each tie group
    return (ends - (counts - 1) / 2.0)[inverse]
