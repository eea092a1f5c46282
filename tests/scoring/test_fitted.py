"""The reference-fitted methods knn and mahalanobis as methods: back ends, pseudo-labels, refusals, the record."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import oodfilter
from oodfilter.errors import InputError
from oodfilter.scoring import fitted_math as fm
from oodfilter.scoring.factory import build_scorer
from oodfilter.scoring.fitted import KNN, Mahalanobis
from oodfilter.scoring.methods import PrerequisiteContext
from oodfilter.scoring.reference import ReferenceFeatures, features_digest, reference_record
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.text.class_vectors import ClassVectors

CLASSES = ["tench", "goldfish", "hen", "ostrich"]


@pytest.fixture(scope="module")
def world(tiny_model):
    """Four orthonormal class vectors; reference and held-out ID features near them; OOD features away from them."""
    g = torch.Generator().manual_seed(0)
    dim, c = tiny_model.embed_dim, len(CLASSES)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q.T  # (D, D)
    yes = basis[:c]
    vectors = ClassVectors(class_names=CLASSES, templates=("a photo of a {}.",), yes=yes, no=None,
                           fingerprints={"yes": tiny_model.text_fingerprint("yes")})
    reference = F.normalize(yes.repeat(10, 1) + 0.1 * torch.randn(40, dim, generator=g), dim=-1)
    held_out = F.normalize(yes.repeat(3, 1) + 0.1 * torch.randn(12, dim, generator=g), dim=-1)
    ood = F.normalize(torch.randn(12, dim - c, generator=g) @ basis[c:], dim=-1)
    return vectors, reference, held_out, ood


def _scores(model, vectors, method, reference, features):
    scorer = oodfilter.Scorer(model, vectors, method, reference_features=reference)
    return scorer, scorer.score_features(features).ood_score


@pytest.mark.parametrize("k", [1, 3])
def test_knn_faiss_and_torch_search_give_the_same_scores(tiny_model, world, k):
    vectors, reference, held_out, ood = world
    features = torch.cat([reference[:4], held_out, ood])
    faiss_scorer, by_faiss = _scores(tiny_model, vectors, KNN(k, backend="faiss"), reference, features)
    _, by_torch = _scores(tiny_model, vectors, KNN(k, backend="torch"), reference, features)
    assert faiss_scorer.method.backend_used == "faiss"
    torch.testing.assert_close(by_faiss, by_torch, atol=2e-3, rtol=0)  # sqrt near 0 magnifies float error
    exact = torch.cdist(features.double(), reference.double()).sort(dim=1).values[:, k - 1]
    torch.testing.assert_close(by_torch.double(), exact, atol=2e-3, rtol=0)
    assert by_torch[4:16].max() < by_torch[16:].min()  # held-out ID nearer the reference than OOD


def test_knn_falls_back_to_torch_without_faiss_and_says_so_when_faiss_is_asked_for(tiny_model, world, monkeypatch):
    vectors, reference, held_out, _ = world
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    scorer, scores = _scores(tiny_model, vectors, "knn", reference, held_out)
    assert scorer.method.backend_used == "torch"
    torch.testing.assert_close(scores, fm.knn_distance(held_out, reference, 1))
    with pytest.raises(InputError, match="pip install faiss-cpu"):
        oodfilter.Scorer(tiny_model, vectors, KNN(backend="faiss"), reference_features=reference)


def test_knn_refuses_more_neighbours_than_reference_images(tiny_model, world):
    vectors, reference, _, _ = world
    with pytest.raises(InputError, match="k = 41 needs at least 41 reference images, got 40"):
        oodfilter.Scorer(tiny_model, vectors, KNN(41), reference_features=reference)


def test_mahalanobis_fits_one_gaussian_per_pseudo_label_or_one_for_all(tiny_model, world):
    vectors, reference, held_out, ood = world
    features = torch.cat([held_out, ood])
    scorer, scores = _scores(tiny_model, vectors, "mahalanobis", reference, features)
    assert scorer.method.fitted_meta()["gaussians"] == 4  # each reference image is pseudo-labelled its class
    labels = (reference @ vectors.yes.T).argmax(dim=1)
    fit = fm.fit_gaussians(reference, labels)
    torch.testing.assert_close(scores, fm.mahalanobis_min(features, fit.means, fit.precision))
    assert scores[:12].max() < scores[12:].min()
    single, _ = _scores(tiny_model, vectors, Mahalanobis(labels="single"), reference, features)
    assert single.method.fitted_meta()["gaussians"] == 1


@pytest.mark.parametrize("name", ["knn", "mahalanobis"])
def test_a_fitted_method_without_reference_is_refused_and_names_the_option(tiny_model, world, name):
    vectors, _, _, _ = world
    method = oodfilter.score_methods.create(name)
    assert method.needs_reference and not method.threshold_free
    with pytest.raises(InputError, match="--reference ID_IMAGES"):
        method.check_prerequisites(PrerequisiteContext(tiny_model, CLASSES))
    method.check_prerequisites(PrerequisiteContext(tiny_model, CLASSES, reference_features=True))
    with pytest.raises(InputError, match="--reference ID_IMAGES"):
        oodfilter.Scorer(tiny_model, vectors, name)


@pytest.mark.parametrize("name", ["knn", "mahalanobis"])
def test_build_scorer_refuses_before_loading_a_model(monkeypatch, tmp_path, name):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr("oodfilter.scoring.factory.load_model", no_load)
    with pytest.raises(InputError, match="--reference ID_IMAGES"):
        build_scorer(ScorerSpec(model="test-tiny", classes=CLASSES, method=name))
    with pytest.raises(InputError, match=f"--reference {tmp_path / 'gone'}: .*does not exist"):
        build_scorer(ScorerSpec(model="test-tiny", classes=CLASSES, method=name, reference=[str(tmp_path / "gone")]))
    with pytest.raises(InputError, match="takes a list of paths"):
        build_scorer(ScorerSpec(model="test-tiny", classes=CLASSES, method=name, reference=str(tmp_path)))


def test_given_reference_features_fit_and_are_recorded(tiny_model, world, cache_dir):
    _, reference, held_out, _ = world
    given = ReferenceFeatures(reference, ("mine",))
    scorer = build_scorer(ScorerSpec(model="test-tiny", classes=CLASSES, method="knn", cache_dir=str(cache_dir)),
                          model=tiny_model, reference=given)
    assert scorer.reference is given
    record = reference_record(scorer)
    assert record == {"paths": ["mine"], "count": 40, "stored": 0, "features_sha256": features_digest(reference),
                      "fit": {"k": 1, "backend": "faiss"}}
    assert features_digest(reference) != features_digest(reference[:-1])
    assert features_digest(reference) != features_digest(reference.flip(0))
    scores = scorer.score_features(torch.cat([reference[:3], held_out])).ood_score
    assert scores[:3].max() < 2e-3 < scores[3:].min()


def test_rescore_warns_when_the_reference_is_the_manifest_being_rescored(tmp_path, monkeypatch):
    from oodfilter.scan.rescore import RescoreConfig, _warn_reference_is_source

    source = tmp_path / "scan.jsonl"
    source.write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="--reference includes the manifest being rescored"):
        _warn_reference_is_source(RescoreConfig(manifest=str(source), reference=[str(tmp_path / "ref"), "scan.jsonl"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_reference_is_source(RescoreConfig(manifest=str(source), reference=[str(tmp_path / "ref")]))


def test_a_reference_for_a_method_not_fitted_on_one_is_not_read_and_says_so(tiny_model, cache_dir, shared_data,
                                                                             tmp_path, monkeypatch):
    folder = tmp_path / "ref"
    folder.mkdir()
    photo = sorted((shared_data / "imagenet-sample" / "images").iterdir())[0]
    (folder / photo.name).write_bytes(photo.read_bytes())

    def no_read(*args, **kwargs):
        raise AssertionError("the reference was read")

    monkeypatch.setattr("oodfilter.scoring.factory.load_reference", no_read)
    spec = ScorerSpec(model="test-tiny", classes=CLASSES, method="msp", reference=[str(folder)],
                      cache_dir=str(cache_dir))
    with pytest.warns(UserWarning, match="--reference is not used: method 'msp' is not fitted on reference images"):
        scorer = build_scorer(spec, model=tiny_model)
    assert scorer.reference is None and reference_record(scorer) is None
    with pytest.raises(AssertionError, match="the reference was read"):  # a fitted method does read it
        build_scorer(ScorerSpec(model="test-tiny", classes=CLASSES, method="knn", reference=[str(folder)],
                                cache_dir=str(cache_dir)), model=tiny_model)
