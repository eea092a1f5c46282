"""CLIPN losses against a loop-by-loop float64 evaluation of docs/method.md §2."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from oodfilter.train.losses import clipn_loss


def _features(n=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1) for _ in range(3)]


def _reference(f, y, no, s, groups=None):
    n = f.shape[0]
    # q_ij = σ(z_ij); log q = −log(1 + e^{−z}) and log(1 − q) = −log(1 + e^{z}), without cancellation.
    z = [[s * (float(f[i] @ y[j]) - float(f[i] @ no[j])) for j in range(n)] for i in range(n)]
    match = sum(math.log1p(math.exp(-z[i][i])) for i in range(n)) / n
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (groups is None or groups[i] != groups[j])]
    mismatch = sum(math.log1p(math.exp(z[i][j])) for i, j in pairs) / len(pairs)
    tso = sum(2 - math.sqrt(2 - 2 * float(y[i] @ no[i]) + 1e-4) for i in range(n)) / n
    return 0.5 * (match + mismatch + tso), match, mismatch, tso


def test_loss_matches_the_formulas():
    f, y, no = _features()
    out = clipn_loss(f, y, no, 14.0)
    for got, expected in zip(out, _reference(f, y, no, 14.0)):
        assert abs(float(got) - expected) < 1e-5


def test_same_group_pairs_leave_the_mismatch_term():
    f, y, no = _features(n=6, seed=1)
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    out = clipn_loss(f, y, no, 30.0, groups=groups)
    reference = _reference(f, y, no, 30.0, groups=groups.tolist())
    assert abs(float(out.mismatch) - reference[2]) < 1e-5
    assert abs(float(out.mismatch) - float(clipn_loss(f, y, no, 30.0).mismatch)) > 1e-4


def test_untrained_no_branch_is_at_chance():
    f, y, _ = _features()
    out = clipn_loss(f, y, y.clone(), 100.0)  # gⁿᵒ = g: every q is 1/2
    assert abs(float(out.match) - math.log(2)) < 1e-6 and abs(float(out.mismatch) - math.log(2)) < 1e-6
    assert abs(float(out.tso) - (2 - math.sqrt(1e-4))) < 1e-5


def test_gradient_reaches_only_the_no_features():
    f, y, no = _features()
    no.requires_grad_(True)
    clipn_loss(f, y, no, 10.0).total.backward()
    assert no.grad is not None and torch.isfinite(no.grad).all() and no.grad.abs().sum() > 0
