"""NegLabel: the score formula, the mining rule, and the shipped vocabulary."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import oodfilter
from oodfilter_neglabel import load_vocabulary, mine_negatives, neglabel_scores


def test_score_matches_the_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    cos_id = torch.rand(3, 4, generator=g, dtype=torch.float64) * 2 - 1
    cos_neg = torch.rand(3, 6, generator=g, dtype=torch.float64) * 2 - 1
    groups = torch.tensor([0, 1, 0, 1, 2, 2])
    tau = 0.5
    got = neglabel_scores(cos_id, cos_neg, groups, tau)
    for b in range(3):
        s_id = sum(math.exp(float(x) / tau) for x in cos_id[b])
        per_group = []
        for grp in range(3):
            s_neg = sum(math.exp(float(cos_neg[b, j]) / tau) for j in range(6) if groups[j] == grp)
            per_group.append(s_id / (s_id + s_neg))
        assert float(got[b]) == pytest.approx(1 - sum(per_group) / 3, abs=1e-6)


def test_small_temperature_stays_finite():
    cos = torch.ones(2, 3)
    scores = neglabel_scores(cos, torch.full((2, 500), 0.99), torch.arange(500) % 10, 0.01)
    assert torch.isfinite(scores).all() and (scores > 0).all() and (scores < 1).all()


def test_shipped_vocabulary():
    words = load_vocabulary()
    assert len(words) > 60_000
    assert all(words) and len({w.casefold() for w in words}) == len(words)


def test_mined_negatives_are_the_farthest_candidates(tmp_path):
    model = oodfilter.load_model("test-tiny", device="cpu")
    id_index = oodfilter.build_class_vectors(model, ["goldfish", "tench", "hen", "ostrich", "shark"],
                                             templates="photo", cache_dir=tmp_path, include_no=False)
    words = list(load_vocabulary()[::25])  # ~2.7k candidates keep the test fast
    vocab = oodfilter.build_class_vectors(model, words, templates="photo", cache_dir=tmp_path, include_no=False)
    kept = mine_negatives(id_index, vocab.yes, ratio=0.15, quantile=0.95)
    closeness = (vocab.yes @ id_index.yes.T).max(dim=1).values  # C = 5: the 0.95-quantile is the max
    expected = torch.argsort(closeness, stable=True)[: len(kept)]
    assert set(kept.tolist()) == set(expected.tolist())
    random_sample = torch.randperm(len(words), generator=torch.Generator().manual_seed(0))[: len(kept)]
    assert closeness[kept].mean() < closeness[random_sample].mean()
    assert closeness[kept].max() <= closeness[random_sample].median()


def test_scorer_prepares_from_a_small_vocabulary(tmp_path):
    from oodfilter_neglabel import NegLabel

    model = oodfilter.load_model("test-tiny", device="cpu")
    index = oodfilter.build_class_vectors(model, ["goldfish", "tench"], cache_dir=tmp_path)
    method = NegLabel(["goldfish", "car", "house", "tree", "river", "cloud", "road", "chair"], ratio=0.5, groups=2)
    scorer = oodfilter.Scorer(model, index, method, cache_dir=tmp_path)
    assert len(method.negative_names) == 4 and "goldfish" not in method.negative_names  # ID names are excluded
    result = scorer.score_features(F.normalize(torch.randn(5, model.embed_dim), dim=-1))
    assert result.ood_score.shape == (5,) and result.is_ood is None
