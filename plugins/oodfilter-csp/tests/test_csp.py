"""CSP and the fused score: the formulas, the pool, the mining, the cache, and scoring real images."""

from __future__ import annotations

import math
import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import oodfilter
from oodfilter.scoring import functional as fn
from oodfilter_csp import (
    CSP,
    SUPERCLASSES,
    Fused,
    atd_over_negatives,
    conjugated_labels,
    fused_scores,
    group_logsumexp,
    load_modifiers,
)
from oodfilter_neglabel import NegLabel

ID_NAMES = ["goldfish", "tench", "hen", "ostrich", "shark"]
NOUNS = ["car", "house", "tree", "river", "cloud", "road", "chair", "goldfish", "mountain", "bridge", "cup", "lamp"]
MODIFIERS = ["red", "smooth", "furry", "wooden", "striped", "wet"]
# The project's real images (tests/conftest.py's fixtures do not reach the plugins' tests).
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.fixture(scope="module")
def tiny_model():
    """The registered test-tiny CLIPN (seeded weights, trained-looking no-branch)."""
    return oodfilter.load_model("test-tiny", device="cpu")


@pytest.fixture
def fresh_tiny_model():
    """test-tiny built like any open_clip name: its no-branch is an untrained copy of the yes tower."""
    from oodfilter.model.build import build_from_open_clip

    return build_from_open_clip("test-tiny").eval()


@pytest.fixture
def real_images() -> list[Path]:
    """A dozen real photos (ImageNet sample) and textures (DTD)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real image data not found at {SHARED_DATA} (only present in the project workspace and CI)")
    photos = sorted((SHARED_DATA / "imagenet-sample" / "images").iterdir())[:8]
    return photos + sorted((SHARED_DATA / "textures-dtd" / "images").rglob("*.jpg"))[::300][:4]


def _rand(shape, g):
    return torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1


def test_fused_score_matches_the_formula_in_float64():
    g = torch.Generator().manual_seed(3)
    ly, ln = 3 * _rand((3, 4), g), 3 * _rand((3, 4), g)
    cy, cn = _rand((3, 4), g) / 20, _rand((3, 6), g) / 20  # cosines: /τ spans ±5
    groups = torch.tensor([0, 1, 0, 1, 2, 2])
    got = fused_scores(ly, ln, cy, cn, groups)
    for b in range(3):
        softmax = [math.exp(float(x)) / sum(math.exp(float(y)) for y in ly[b]) for x in ly[b]]
        known = [softmax[c] / (1 + math.exp(float(ln[b, c] - ly[b, c]))) for c in range(4)]
        id_mass = sum(math.exp(float(x) / 0.01) for x in cy[b])
        q = sum(id_mass / (id_mass + sum(math.exp(float(cn[b, j]) / 0.01) for j in range(6) if groups[j] == grp))
                for grp in range(3)) / 3
        ood = 1 - q * sum(known)
        assert float(got.ood_score[b]) == pytest.approx(ood, abs=1e-9)
        assert bool(got.is_ood[b]) == (ood > q * max(known))


def test_fused_without_reachable_negatives_is_atd():
    g = torch.Generator().manual_seed(4)
    ly, ln = 20 * _rand((50, 5), g), 20 * _rand((50, 5), g)
    cy, far = _rand((50, 5), g) / 10, torch.full((50, 8), -1.0, dtype=torch.float64)
    far[:, 0] = cy.amax(dim=1) - 0.5  # the nearest negative is 0.5 below the best class: e^{-50} at τ = 0.01
    got, atd = fused_scores(ly, ln, cy, far, torch.zeros(8, dtype=torch.long)), fn.atd(ly, ln)
    torch.testing.assert_close(got.ood_score, atd.ood_score)
    assert torch.equal(got.is_ood, atd.is_ood)


def test_fused_flags_what_either_part_rejects():
    ly = torch.tensor([[30.0, 10.0]]).repeat(3, 1)  # (3, C): all look like class 0
    ln = torch.tensor([[10.0, 10.0], [10.0, 10.0], [40.0, 10.0]])  # image 2: CLIPN says "not class 0"
    cy = torch.tensor([[0.30, 0.10]]).repeat(3, 1)
    cn = torch.tensor([[0.20, 0.10], [0.40, 0.10], [0.20, 0.10]])  # image 1 matches a negative label better
    got = fused_scores(ly, ln, cy, cn, torch.tensor([0, 0]))
    assert got.ood_score[0] < 0.01 and not got.is_ood[0]
    assert got.ood_score[1] > 0.99 and got.is_ood[1]  # the negatives reject it
    assert got.ood_score[2] > 0.99 and got.is_ood[2]  # the no-branch rejects it


def test_atd_over_negatives_matches_the_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    ly, ln, lneg = 3 * _rand((3, 4), g), 3 * _rand((3, 4), g), 3 * _rand((3, 6), g)
    groups = torch.tensor([0, 1, 0, 1, 2, 2])
    got = atd_over_negatives(ly, ln, lneg, groups)
    for b in range(3):
        p_yes = [1 / (1 + math.exp(float(ln[b, c] - ly[b, c]))) for c in range(4)]
        ids, bests = [], []
        for grp in range(3):
            denominator = sum(math.exp(float(x)) for x in ly[b]) + sum(
                math.exp(float(lneg[b, j])) for j in range(6) if groups[j] == grp)
            known = [math.exp(float(ly[b, c])) / denominator * p_yes[c] for c in range(4)]
            ids.append(sum(known))
            bests.append(max(known))
        ood = 1 - sum(ids) / 3
        assert float(got.ood_score[b]) == pytest.approx(ood, abs=1e-9)
        assert bool(got.is_ood[b]) == (ood > sum(bests) / 3)


def test_atd_over_negatives_without_reachable_negatives_is_atd():
    g = torch.Generator().manual_seed(1)
    ly, ln = 20 * _rand((50, 5), g), 20 * _rand((50, 5), g)
    far = torch.full((50, 8), -1e4, dtype=torch.float64)
    got, atd = atd_over_negatives(ly, ln, far, torch.arange(8) % 4), fn.atd(ly, ln)
    torch.testing.assert_close(got.ood_score, atd.ood_score)
    assert torch.equal(got.is_ood, atd.is_ood)


def test_atd_over_negatives_rises_for_images_that_match_a_negative():
    ly = torch.tensor([[30.0, 10.0]]).repeat(2, 1)  # (2, C): both images look like class 0
    ln = torch.tensor([[10.0, 10.0]]).repeat(2, 1)  # CLIPN says "yes, class 0" for both
    lneg = torch.tensor([[0.0, 0.0], [35.0, 0.0]])  # the second image matches a negative label better
    got = atd_over_negatives(ly, ln, lneg, torch.tensor([0, 0]))
    assert got.ood_score[0] < 0.01 and not got.is_ood[0]
    assert got.ood_score[1] > 0.9 and got.is_ood[1]


def test_group_logsumexp_is_stable_at_neglabel_temperature():
    g = torch.Generator().manual_seed(2)
    logits = _rand((4, 30), g).float() / 0.01 - 50  # spans ~200: a global shift would underflow float32
    groups = torch.arange(30) % 7
    got = group_logsumexp(logits, groups, 7)
    expected = torch.stack([torch.logsumexp(logits.double()[:, groups == k], dim=1) for k in range(7)], dim=1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-4)


def test_shipped_modifiers_are_wordnet_adjectives():
    modifiers = load_modifiers()
    assert len(modifiers) > 1500 and len(set(modifiers)) == len(modifiers)
    assert {"red", "smooth", "wooden", "bright", "fuzzy", "wet"} <= set(modifiers)  # redness, fuzziness, ...
    assert not {"har", "wit", "lio", "baro", "wilder"} & set(modifiers)  # harness, lioness: not nominalisations
    assert all(m.isalpha() and m.islower() for m in modifiers)


def test_conjugated_labels_pair_every_modifier_with_every_superclass():
    labels = conjugated_labels(["red", "Red", "smooth"], ["object", "scene"])
    assert labels == ["red object", "red scene", "smooth object", "smooth scene"]  # "Red …" is a duplicate
    assert len(conjugated_labels(MODIFIERS)) == len(MODIFIERS) * len(SUPERCLASSES)


def _vectors(model, tmp_path, include_no=False):
    return oodfilter.build_class_vectors(model, ID_NAMES, templates="photo", cache_dir=tmp_path, include_no=include_no)


def test_csp_mines_nouns_and_conjugated_labels_and_caches_them(tiny_model, tmp_path, monkeypatch):
    method = CSP(NOUNS, MODIFIERS, ratio=0.25, groups=3)
    scorer = oodfilter.Scorer(tiny_model, _vectors(tiny_model, tmp_path), method, cache_dir=tmp_path)
    names = method.negative_names
    conjugated = [n for n in names if n.split()[-1] in SUPERCLASSES]
    assert len(conjugated) == round(0.25 * len(MODIFIERS) * len(SUPERCLASSES))  # the ratio of each part
    assert len(names) - len(conjugated) == round(0.25 * (len(NOUNS) - 1))  # "goldfish" is an ID class
    assert "goldfish" not in names
    assert sorted(method.pool.group_of.unique().tolist()) == [0, 1, 2]
    before = scorer.score_features(torch.nn.functional.normalize(torch.randn(4, tiny_model.embed_dim), dim=-1))

    def no_encoding(*args, **kwargs):
        raise AssertionError("the pool was encoded again instead of read from the cache")

    monkeypatch.setattr("oodfilter.text.class_vectors.encode_caption_sets", no_encoding)
    again = CSP(NOUNS, MODIFIERS, ratio=0.25, groups=3)
    oodfilter.Scorer(tiny_model, _vectors(tiny_model, tmp_path), again, cache_dir=tmp_path)
    assert again.negative_names == names
    assert before.ood_score.shape == (4,)


@pytest.mark.slow
def test_csp_and_fused_score_real_images(tiny_model, tmp_path, real_images):
    vectors = _vectors(tiny_model, tmp_path, include_no=True)
    paths = [str(p) for p in real_images]
    neglabel = oodfilter.Scorer(tiny_model, vectors, NegLabel(NOUNS, ratio=0.25, groups=3), cache_dir=tmp_path)
    csp = oodfilter.Scorer(tiny_model, vectors, CSP(NOUNS, MODIFIERS, ratio=0.25, groups=3), cache_dir=tmp_path)
    fused = oodfilter.Scorer(tiny_model, vectors, Fused(NOUNS, MODIFIERS, ratio=0.25, groups=3), cache_dir=tmp_path)
    rows = {name: [row for batch in oodfilter.score_files(s, paths) for row in batch]
            for name, s in (("neglabel", neglabel), ("csp", csp), ("fused", fused))}
    for name, scored in rows.items():
        assert [r.status for r in scored] == ["ok"] * len(paths), name
        assert all(0.0 <= r.ood_score <= 1.0 for r in scored), name
    assert all(r.is_ood in (True, False) for r in rows["fused"])  # threshold-free
    # fused = 1 − (1 − ATD)(1 − CSP): the same negatives, the same class vectors
    atd = oodfilter.Scorer(tiny_model, vectors, "atd", cache_dir=tmp_path)
    atd_rows = [row for batch in oodfilter.score_files(atd, paths) for row in batch]
    for f, a, c in zip(rows["fused"], atd_rows, rows["csp"], strict=True):
        assert f.ood_score == pytest.approx(1 - (1 - a.ood_score) * (1 - c.ood_score), abs=1e-5)
    # the conjugated labels change the scores: CSP is not NegLabel under another name
    differences = [abs(a.ood_score - b.ood_score) for a, b in zip(rows["csp"], rows["neglabel"], strict=True)]
    assert max(differences) > 1e-4
    # scoring stored features gives what the scan gave: the methods run on a manifest's features too
    images = torch.stack([tiny_model.preprocess(oodfilter.load_rgb_image(p)) for p in real_images[:4]])
    stored = fused.score_features(fused.encode_images(images))
    torch.testing.assert_close(stored.ood_score, torch.tensor([r.ood_score for r in rows["fused"][:4]]),
                               atol=1e-5, rtol=0)


def test_fused_needs_a_trained_no_branch(fresh_tiny_model, tmp_path):
    vectors = oodfilter.build_class_vectors(fresh_tiny_model, ID_NAMES, templates="photo", cache_dir=tmp_path)
    with pytest.raises(oodfilter.errors.InputError, match="no-branch"):
        oodfilter.Scorer(fresh_tiny_model, vectors, Fused(NOUNS, MODIFIERS), cache_dir=tmp_path)


def test_methods_register_by_entry_point():
    found = {e.name: e.value for e in entry_points(group="oodfilter.scorers")}
    if "csp" not in found:
        pytest.skip("oodfilter-csp is not installed (pip install -e plugins/oodfilter-csp)")
    assert found["csp"] == "oodfilter_csp.scorer:CSP" and found["fused"] == "oodfilter_csp.scorer:Fused"
    from oodfilter.scoring.methods import score_methods

    assert score_methods.get("csp") is CSP and score_methods.get("fused") is Fused
