"""Score functions against a plain float64 re-computation of docs/method.md's formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oodfilter.scoring import functional as fn


def _random_problem(batch=7, classes=5, dim=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1)
    w_yes = F.normalize(torch.randn(classes, dim, generator=g, dtype=torch.float64), dim=-1)
    w_no = F.normalize(torch.randn(classes, dim, generator=g, dtype=torch.float64), dim=-1)
    return f.to(dtype), w_yes.to(dtype), w_no.to(dtype)


def _reference(f, w_yes, w_no, s):
    """Loop-by-loop float64 evaluation of every score, straight from the formulas."""
    rows = []
    for b in range(f.shape[0]):
        fb = [float(x) for x in f[b].double()]
        cos_y = [sum(a * c for a, c in zip(fb, [float(x) for x in w])) for w in w_yes.double()]
        cos_n = [sum(a * c for a, c in zip(fb, [float(x) for x in w])) for w in w_no.double()]
        ly = [s * c for c in cos_y]
        ln = [s * c for c in cos_n]
        m = max(ly)
        z = sum(math.exp(v - m) for v in ly)
        p = [math.exp(v - m) / z for v in ly]
        p_yes = [1 / (1 + math.exp(-(a - b_))) for a, b_ in zip(ly, ln)]
        top = max(range(len(p)), key=p.__getitem__)
        ctw = 1 - p_yes[top]
        p_unknown = sum((1 - py) * pc for py, pc in zip(p_yes, p))
        atd_decision = p_unknown > max(py * pc for py, pc in zip(p_yes, p))
        mc = max(cos_y)
        zc = sum(math.exp(c - mc) for c in cos_y)
        rows.append(
            {
                "ctw": ctw,
                "ctw_is_ood": ctw > 0.5,
                "atd": p_unknown,
                "atd_is_ood": atd_decision,
                "msp": 1 - max(p),
                "maxlogit": -max(ly),
                "energy": -(m + math.log(z)),
                "mcm": 1 - 1 / zc,
                "top": top,
                "top_prob": max(p),
            }
        )
    return rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_scores_match_float64_reference(dtype, scale):
    f, w_yes, w_no = _random_problem(dtype=dtype, seed=int(scale))
    ly = fn.class_logits(f, w_yes, scale)
    ln = fn.class_logits(f, w_no, scale)
    cos = f @ w_yes.T
    ref = _reference(f, w_yes, w_no, scale)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)

    def column(key):
        return torch.tensor([r[key] for r in ref], dtype=torch.float64)

    for name, output in {
        "ctw": fn.ctw(ly, ln),
        "atd": fn.atd(ly, ln),
        "msp": fn.msp(ly),
        "maxlogit": fn.max_logit(ly),
        "energy": fn.energy(ly),
        "mcm": fn.mcm(cos),
    }.items():
        assert output.ood_score.dtype == dtype
        torch.testing.assert_close(output.ood_score.double(), column(name), **tol, msg=name)
    assert fn.ctw(ly, ln).is_ood.tolist() == [r["ctw_is_ood"] for r in ref]
    assert fn.atd(ly, ln).is_ood.tolist() == [r["atd_is_ood"] for r in ref]
    top, top_prob = fn.top_class(ly)
    assert top.tolist() == [r["top"] for r in ref]
    torch.testing.assert_close(top_prob.double(), column("top_prob"), **tol)


def test_half_precision_inputs_are_computed_in_float32():
    f, w_yes, w_no = _random_problem()
    ly, ln = fn.class_logits(f, w_yes, 100.0), fn.class_logits(f, w_no, 100.0)
    out = fn.atd(ly.half(), ln.half())
    assert out.ood_score.dtype == torch.float32
    torch.testing.assert_close(out.ood_score, fn.atd(ly.half().float(), ln.half().float()).ood_score)


def test_scores_are_batch_size_and_order_invariant():
    f, w_yes, w_no = _random_problem(batch=32)
    ly, ln = fn.class_logits(f, w_yes, 100.0), fn.class_logits(f, w_no, 100.0)
    full = fn.atd(ly, ln)
    parts = [fn.atd(ly[i : i + 5], ln[i : i + 5]) for i in range(0, 32, 5)]
    # Equal up to float32 rounding: on some CPUs (seen on an AMX Xeon) the vectorised reductions take another
    # path for a batch of 5 than for 32, which moves a score by one ulp. Decisions are identical.
    torch.testing.assert_close(torch.cat([p.ood_score for p in parts]), full.ood_score, rtol=4e-7, atol=1e-12)
    assert torch.equal(torch.cat([p.is_ood for p in parts]), full.is_ood)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    for score in (lambda a, b: fn.ctw(a, b), lambda a, b: fn.atd(a, b), lambda a, b: fn.energy(a)):
        torch.testing.assert_close(score(ly[perm], ln[perm]).ood_score, score(ly, ln).ood_score[perm])


def test_higher_means_more_ood_for_every_score():
    # Image 0 matches class 0 strongly (ID); image 1 is orthogonal to every class (OOD-like).
    w_yes = torch.eye(4)[:3]  # (3, 4)
    w_no = F.normalize(torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 3) + 0.1 * torch.eye(4)[:3], dim=-1)
    f = torch.stack([torch.eye(4)[0], torch.eye(4)[3]])  # (2, 4)
    ly, ln, cos = fn.class_logits(f, w_yes, 100.0), fn.class_logits(f, w_no, 100.0), f @ w_yes.T
    for output in (fn.ctw(ly, ln), fn.atd(ly, ln), fn.msp(ly), fn.max_logit(ly), fn.energy(ly), fn.mcm(cos)):
        assert output.ood_score[1] > output.ood_score[0]
    assert fn.ctw(ly, ln).is_ood.tolist() == [False, True]
    assert fn.atd(ly, ln).is_ood.tolist() == [False, True]


def test_atd_with_one_class_reduces_to_no_probability():
    f, w_yes, w_no = _random_problem(classes=1)
    ly, ln = fn.class_logits(f, w_yes, 50.0), fn.class_logits(f, w_no, 50.0)
    torch.testing.assert_close(fn.atd(ly, ln).ood_score, 1 - fn.clipn_yes_probabilities(ly, ln)[:, 0])


def test_scores_stay_finite_for_extreme_logits():
    ly = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    ln = torch.tensor([[-1e4, 1e4, 0.0], [1e4, 1e4, 1e4]])
    for output in (fn.ctw(ly, ln), fn.atd(ly, ln), fn.msp(ly), fn.max_logit(ly), fn.energy(ly)):
        assert torch.isfinite(output.ood_score).all()
    assert fn.atd(ly, ln).ood_score[1] == pytest.approx(1.0)


def test_atd_score_is_a_probability_despite_float32_rounding():
    # p_no ≈ 1 everywhere, so p_{C+1} is the float32 sum of a softmax: without care it reaches 1 + 1e-7.
    generator = torch.Generator().manual_seed(0)
    logits_yes = torch.randn(2000, 7, generator=generator) * 10  # (B, C)
    score = fn.atd(logits_yes, logits_yes + 40).ood_score
    assert float(score.max()) <= 1.0 and float(score.min()) >= 0.0
