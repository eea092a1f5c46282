"""Pure tensor math of the reference-fitted scores: k-th nearest-neighbour distance and Mahalanobis distance.

Both take L2-normalised features. Higher = more OOD. Nothing here keeps state or reads files; the methods
that fit and hold the state are in :mod:`oodfilter.scoring.fitted`.

kNN (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors"): the Euclidean distance
from a normalised feature z to its k-th nearest normalised reference feature; for unit vectors
‖z − r‖ = sqrt(2 − 2·cos(z, r)), so the k-th largest cosine gives the k-th smallest distance.

Mahalanobis (Lee et al. 2018): class means μ_c and one covariance Σ shared by the classes, shrunk towards
a scaled identity (Ledoit and Wolf 2004); ood(z) = min_c (z − μ_c)ᵀ Σ⁻¹ (z − μ_c).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Queries per step of the torch kNN: bounds the (B, N) cosine matrix (4096 × 100k floats = 1.6 GB).
_KNN_QUERY_CHUNK = 1024


def knn_k_for(count: int) -> int:
    """Return the default k for ``count`` reference features: about 0.1% of them, at least 1.

    Sun et al. use k = 50 for CIFAR-10's 50,000 training images and k = 1000 for ImageNet's 1.28M (and
    k = 10 when sampling 1% of it): k/N ≈ 0.1% throughout, which for a reference of under 1,500 images is
    k = 1, the nearest neighbour.
    """
    return max(1, round(count / 1000))


def distance_from_cosine(cosine: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between unit vectors from their cosine: sqrt(max(0, 2 − 2·cos)); same shape."""
    return torch.sqrt(torch.clamp(2.0 - 2.0 * cosine, min=0.0))


def kth_cosine_torch(queries: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Return the k-th largest cosine of each query to the reference, by exact search in torch.

    Args:
        queries: (B, D) L2-normalised features.
        reference: (N, D) L2-normalised reference features, N ≥ k.
        k: Which neighbour (1 = the nearest).

    Returns:
        (B,) cosines, float32.

    """
    parts = []
    for start in range(0, queries.shape[0], _KNN_QUERY_CHUNK):
        block = queries[start : start + _KNN_QUERY_CHUNK].float() @ reference.float().T  # (b, N)
        parts.append(block.topk(k, dim=1).values[:, k - 1])  # (b,)
    return torch.cat(parts) if parts else queries.new_zeros(0, dtype=torch.float32)


def knn_distance(queries: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Return ood = ‖z − r_(k)‖, the distance from each query to its k-th nearest reference feature (torch search).

    Args:
        queries: (B, D) L2-normalised features.
        reference: (N, D) L2-normalised reference features, N ≥ k.
        k: Which neighbour.

    Returns:
        (B,) distances in [0, 2].

    """
    return distance_from_cosine(kth_cosine_torch(queries, reference, k))


@dataclass(frozen=True)
class GaussianFit:
    """Class means and the shared precision matrix of a Mahalanobis score.

    Attributes:
        means: (K, D) class means (K classes that had reference features).
        precision: (D, D) inverse of the shrunk shared covariance, float64.
        shrinkage: The shrinkage λ used: Σ = (1 − λ)·S + λ·(tr S / D)·I.

    """

    means: torch.Tensor
    precision: torch.Tensor
    shrinkage: float


def ledoit_wolf_shrinkage(centred: torch.Tensor) -> float:
    """Return the Ledoit-Wolf shrinkage λ ∈ [0, 1] of the covariance of ``centred`` (N, D) rows towards (tr S / D)·I.

    S = XᵀX / N; λ = min(β, δ) / δ with δ = ‖S − μI‖²_F / D, μ = tr S / D, and β the estimated variance
    of the entries of S: (1 / (N²·D))·Σ_n ‖x_n x_nᵀ − S‖²_F (Ledoit and Wolf 2004, Lemma 3.2-3.4).
    """
    x = centred.double()  # (N, D)
    n, d = x.shape
    if n == 0 or d == 0:
        return 1.0
    squares = x * x  # (N, D)
    trace_terms = squares.sum(dim=0) / n  # (D,) diagonal of S
    mu = float(trace_terms.sum()) / d
    gram_sq = float(((x.T @ x) ** 2).sum()) / n**2  # ‖S‖²_F
    beta_raw = float((squares.T @ squares).sum())  # Σ_n ‖x_n‖⁴
    beta = (beta_raw / n - gram_sq) / (d * n)
    delta = (gram_sq - 2.0 * mu * float(trace_terms.sum()) + d * mu**2) / d
    if delta <= 0.0:
        return 1.0 if beta > 0 else 0.0
    return min(max(beta, 0.0), delta) / delta


def fit_gaussians(features: torch.Tensor, labels: torch.Tensor, shrinkage: float | None = None) -> GaussianFit:
    """Fit class means and one shrunk covariance shared by the classes.

    Args:
        features: (N, D) reference features.
        labels: (N,) integer class of each feature (one class everywhere: a single Gaussian).
        shrinkage: λ in [0, 1]; None estimates it (Ledoit-Wolf).

    Returns:
        The means of the classes that occur (in ascending label order) and the precision matrix.

    """
    x = features.double()  # (N, D)
    classes = torch.unique(labels)  # (K,) sorted
    index = torch.searchsorted(classes, labels)  # (N,) 0..K-1
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, index, x)  # (K, D)
    counts = torch.bincount(index, minlength=len(classes)).to(x.dtype)  # (K,)
    means = sums / counts[:, None]  # (K, D)
    centred = x - means[index]  # (N, D)
    covariance = centred.T @ centred / x.shape[0]  # (D, D)
    lam = ledoit_wolf_shrinkage(centred) if shrinkage is None else float(shrinkage)
    d = x.shape[1]
    target = torch.trace(covariance) / d
    if float(target) <= 0.0:  # every reference feature equal to its class mean: an isotropic unit spread
        target = torch.ones((), dtype=x.dtype, device=x.device)
        lam = 1.0
    shrunk = (1.0 - lam) * covariance + lam * target * torch.eye(d, dtype=x.dtype, device=x.device)  # (D, D)
    precision = torch.linalg.pinv(shrunk, hermitian=True)  # (D, D); pinv: λ = 0 on a rank-deficient S
    return GaussianFit(means=means, precision=precision, shrinkage=lam)


def mahalanobis_min(queries: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Return ood = min_c (z − μ_c)ᵀ P (z − μ_c), computed in float64.

    Args:
        queries: (B, D) features.
        means: (K, D) class means.
        precision: (D, D) symmetric precision matrix P.

    Returns:
        (B,) float32 squared Mahalanobis distances to the nearest class mean (≥ 0).

    """
    z = queries.to(precision.device, torch.float64)  # (B, D)
    m = means.to(precision.device, torch.float64)  # (K, D)
    zp = z @ precision  # (B, D)
    quad_z = (zp * z).sum(dim=1)  # (B,)
    quad_m = ((m @ precision) * m).sum(dim=1)  # (K,)
    cross = zp @ m.T  # (B, K)
    distances = quad_z[:, None] - 2.0 * cross + quad_m[None, :]  # (B, K)
    return distances.min(dim=1).values.clamp(min=0.0).float()  # (B,)
