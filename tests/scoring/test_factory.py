"""ScorerSpec + build_scorer: the one way every caller builds a scorer."""

from __future__ import annotations

import pickle

import pytest
import torch

import oodfilter
from oodfilter.scoring import ScorerSpec, build_scorer

NAMES = ["tench", "goldfish", "hen"]


def test_spec_pickles_and_builds_the_same_scorer_as_by_hand(tiny_model, cache_dir):
    spec = ScorerSpec(model="test-tiny", classes=NAMES, method="ctw", device="cpu", cache_dir=str(cache_dir))
    restored = pickle.loads(pickle.dumps(spec))
    assert restored == spec
    built = build_scorer(restored)
    by_hand = oodfilter.Scorer(tiny_model, oodfilter.build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir), "ctw")
    features = torch.nn.functional.normalize(torch.randn(6, tiny_model.embed_dim), dim=-1)
    a, b = built.score_features(features), by_hand.score_features(features)
    torch.testing.assert_close(a.ood_score, b.ood_score)
    assert a.is_ood is not None and b.is_ood is not None and torch.equal(a.is_ood, b.is_ood)
    assert built.method.name == "ctw" and built.class_vectors.class_names == NAMES


def test_default_method_is_atd_for_a_trained_no_branch(tiny_model, cache_dir):
    scorer = build_scorer(ScorerSpec(classes=NAMES, cache_dir=str(cache_dir)), model=tiny_model)
    assert scorer.method.name == "atd" and scorer.class_vectors.no is not None


def test_required_decisions_refuse_a_method_without_a_rule_unless_a_threshold_is_given(tiny_model, cache_dir):
    spec = ScorerSpec(classes=NAMES, method="msp", require_decisions=True, decisions_for="--action move",
                      cache_dir=str(cache_dir))
    with pytest.raises(oodfilter.InputError, match="--action move needs decisions"):
        build_scorer(spec, model=tiny_model)
    scorer = build_scorer(ScorerSpec(**{**spec.__dict__, "threshold": 0.5}), model=tiny_model)
    result = scorer.score_features(torch.nn.functional.normalize(torch.randn(3, tiny_model.embed_dim), dim=-1))
    assert result.is_ood is not None and torch.equal(result.is_ood, result.ood_score > 0.5)


def test_a_bad_class_list_fails_before_the_model_is_loaded(tmp_path):
    with pytest.raises(oodfilter.ClassListError):
        build_scorer(ScorerSpec(model="no-such-model-anywhere", classes=str(tmp_path / "missing.txt")))


def test_methods_share_given_class_vectors(tiny_model, cache_dir):
    vectors = oodfilter.build_class_vectors(tiny_model, NAMES, cache_dir=cache_dir)
    for name in ("mcm", "energy", "atd"):
        scorer = build_scorer(ScorerSpec(method=name), model=tiny_model, class_vectors=vectors)
        assert scorer.class_vectors is vectors and scorer.method.name == name
