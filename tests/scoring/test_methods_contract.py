"""The contract every registered scorer keeps (built-ins and installed plugins alike).

Shape (B,), finite values, independence from batch size, and higher = more OOD on a case where the
answer is not in doubt. The tiny model's random text tower makes nearly parallel class vectors, so the
case is built by hand on its embedding space: four orthonormal yes-class vectors, no-vectors turned 60°
away from them, ID images at the class vectors (plus a little noise), OOD images orthogonal to all of them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import oodfilter
from oodfilter.evaluate.metrics import auroc
from oodfilter.scoring.methods import score_methods
from oodfilter.text.class_vectors import ClassVectors

CLASSES = ["tench", "goldfish", "hen", "ostrich"]


@pytest.fixture(scope="module")
def contract_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("contract-cache")


@pytest.fixture(scope="module")
def separable(tiny_model):
    g = torch.Generator().manual_seed(0)
    dim, c = tiny_model.embed_dim, len(CLASSES)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q.T  # (D, D) orthonormal rows
    yes = basis[:c]  # (C, D)
    no = F.normalize(0.5 * basis[:c] + 0.866 * basis[c : 2 * c], dim=-1)  # 60° from each yes vector
    index = ClassVectors(class_names=CLASSES, templates=("a photo of a {}.",), yes=yes, no=no,
                      fingerprints={t: tiny_model.text_fingerprint(t) for t in ("yes", "no")})
    id_features = F.normalize(yes.repeat(6, 1) + 0.02 * torch.randn(24, dim, generator=g), dim=-1)
    ood_features = F.normalize(torch.randn(24, dim - 2 * c, generator=g) @ basis[2 * c :], dim=-1)
    return index, id_features, ood_features


@pytest.mark.parametrize("name", score_methods.list())
def test_scorer_contract(name, tiny_model, separable, contract_cache):
    index, id_features, ood_features = separable
    scorer = oodfilter.Scorer(tiny_model, index, name, cache_dir=contract_cache, reference_features=id_features,
                              batch_size=7)
    features = torch.cat([id_features, ood_features])
    scores = scorer.score_features(features).ood_score
    assert scores.shape == (48,) and torch.isfinite(scores).all()
    one_by_one = torch.cat([scorer.score_features(features[i : i + 1]).ood_score for i in range(48)])
    torch.testing.assert_close(one_by_one, scores, rtol=1e-5, atol=1e-5)
    assert auroc(scores[:24].numpy(), scores[24:].numpy()) >= 0.95, f"{name}: ID does not score below OOD"
