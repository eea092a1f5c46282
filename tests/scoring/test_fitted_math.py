"""The math of the reference-fitted scores on synthetic features: kNN distances and Mahalanobis distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oodfilter.scoring import fitted_math as fm


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_a_reference_point_scores_zero_and_far_points_score_higher():
    reference = _unit(200, 16, 0)
    near = reference[:5]  # in the reference
    nudged = F.normalize(reference[5:10] + 0.05 * _unit(5, 16, 1), dim=-1)
    far = -reference[:5]  # antipodal to their own point; far from the cloud's mass in 16 dims too
    on_ref = fm.knn_distance(near, reference, 1)
    assert torch.allclose(on_ref, torch.zeros(5), atol=1e-3)
    assert (fm.knn_distance(nudged, reference, 1) > on_ref + 0.01).all()
    assert fm.knn_distance(far, reference, 1).min() > fm.knn_distance(nudged, reference, 1).max()


def test_knn_distance_is_the_kth_smallest_euclidean_distance():
    reference, queries = _unit(50, 8, 2), _unit(7, 8, 3)
    exact = torch.cdist(queries.double(), reference.double()).sort(dim=1).values  # (7, 50)
    for k in (1, 3, 50):
        torch.testing.assert_close(fm.knn_distance(queries, reference, k).double(), exact[:, k - 1], atol=1e-5,
                                   rtol=0)


def test_default_k_follows_the_papers_share_of_the_reference():
    assert [fm.knn_k_for(n) for n in (1, 12, 1499, 50_000, 1_281_167)] == [1, 1, 1, 50, 1281]


def test_mahalanobis_equals_a_by_hand_numpy_computation():
    rng = np.random.default_rng(0)
    dim = 6
    means = rng.normal(0, 3, (3, dim))
    labels = np.repeat(np.arange(3), 40)
    x = means[labels] + rng.normal(0, 1, (120, dim)) @ rng.normal(0, 0.5, (dim, dim))
    queries = rng.normal(0, 3, (9, dim))
    lam = 0.2
    # by hand: class means, pooled covariance (1/N), shrunk towards tr/D, inverse, min over classes
    mu = np.stack([x[labels == c].mean(axis=0) for c in range(3)])
    centred = x - mu[labels]
    s = centred.T @ centred / len(x)
    shrunk = (1 - lam) * s + lam * np.trace(s) / dim * np.eye(dim)
    p = np.linalg.inv(shrunk)
    expected = np.min([np.einsum("bd,de,be->b", queries - m, p, queries - m) for m in mu], axis=0)

    fit = fm.fit_gaussians(torch.from_numpy(x), torch.from_numpy(labels), shrinkage=lam)
    got = fm.mahalanobis_min(torch.from_numpy(queries), fit.means, fit.precision)
    np.testing.assert_allclose(fit.means.numpy(), mu, rtol=1e-10)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert fit.shrinkage == lam


def test_ledoit_wolf_shrinkage_matches_scikit_learn():
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(1)
    for n, d in ((30, 20), (200, 8), (10, 64)):
        x = rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, d)
        x -= x.mean(axis=0)
        expected = covariance.ledoit_wolf_shrinkage(x, assume_centered=True)
        assert fm.ledoit_wolf_shrinkage(torch.from_numpy(x)) == pytest.approx(expected, rel=1e-9)


def test_a_small_reference_in_a_large_dimension_still_gives_a_finite_positive_score():
    reference = _unit(5, 64, 4)  # rank 4 after centring: the plain covariance is singular
    fit = fm.fit_gaussians(reference, torch.zeros(5, dtype=torch.long))
    assert 0.0 < fit.shrinkage <= 1.0
    scores = fm.mahalanobis_min(torch.cat([reference, _unit(5, 64, 5)]), fit.means, fit.precision)
    assert torch.isfinite(scores).all() and (scores >= 0).all()
    assert scores[5:].min() > scores[:5].max()  # new points lie outside the fitted spread


def test_identical_reference_features_fall_back_to_an_isotropic_spread():
    reference = _unit(1, 8, 6).repeat(4, 1)
    fit = fm.fit_gaussians(reference, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(fit.precision, torch.eye(8, dtype=torch.float64))
    assert float(fm.mahalanobis_min(reference[:1], fit.means, fit.precision)) == pytest.approx(0.0, abs=1e-9)
