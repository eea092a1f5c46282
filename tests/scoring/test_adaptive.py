"""The dataset-aware pass (oodfilter.scoring.adaptive): its math on synthetic features, and real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import oodfilter
from oodfilter.errors import InputError
from oodfilter.evaluate.metrics import auroc
from oodfilter.scoring.adaptive import (
    AdaptConfig,
    adaptive_scores,
    negative_seeds,
    otsu_cut,
    positive_seeds,
    proxy_id_probability,
    score_with_proxies,
    spherical_kmeans,
)

NAMES = ["cat", "dog", "car", "tree", "house", "boat", "cup", "shoe"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def vectors(tiny_model):
    return oodfilter.build_class_vectors(tiny_model, NAMES, include_no=True)


@pytest.fixture(scope="module")
def planted(vectors) -> np.ndarray:
    """400 ID features near the class vectors, then 80 of one OOD cluster, the last ones mixed toward ID classes."""
    rng = np.random.default_rng(0)
    w = vectors.yes.numpy().astype(np.float64)  # (C, D)
    id_features = _unit(w[rng.integers(0, len(NAMES), 400)] + 0.25 * rng.normal(size=(400, w.shape[1])))
    mix = np.linspace(0.0, 0.8, 80)[:, None]  # 0: the cluster's centre, 0.8: mostly an ID class
    centre = _unit(rng.normal(size=w.shape[1]))
    cluster = _unit((1 - mix) * centre + mix * w[rng.integers(0, len(NAMES), 80)] + 0.1 * rng.normal(size=(80, 32)))
    return np.concatenate([id_features, cluster]).astype(np.float32)


class CountingRows:
    """A memmap that records every read: the rows each one returned, and the row indices of gathers."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.reads: list[int] = []
        self.gathered: list[np.ndarray] = []

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key):
        rows = self.array[key]
        if isinstance(key, np.ndarray):
            self.gathered.append(key.copy())
        self.reads.append(len(rows))
        return rows


def _memmap(tmp_path: Path, features: np.ndarray) -> np.memmap:
    path = tmp_path / "features.f16"
    stored = np.memmap(path, dtype=np.float16, mode="w+", shape=features.shape)
    stored[:] = features
    stored.flush()
    return np.memmap(path, dtype=np.float16, mode="r", shape=features.shape)


def test_a_planted_ood_cluster_is_scored_more_ood(tiny_model, vectors, planted):
    scorer = oodfilter.Scorer(tiny_model, vectors, "atd", device="cpu")
    base = scorer.score_features(torch.from_numpy(planted)).ood_score.numpy()
    result = adaptive_scores(scorer, planted)
    assert result.ood_score.dtype == np.float32 and result.ood_score.shape == (480,) and result.is_ood is None
    assert np.isfinite(result.ood_score).all() and (result.ood_score >= 0).all() and (result.ood_score <= 1).all()
    # the cluster's members the first pass misses (mixed toward ID classes) are lifted by the proxies of the others
    assert auroc(result.ood_score[:400], result.ood_score[400:]) > auroc(base[:400], base[400:]) + 0.1
    assert auroc(result.ood_score[:400], result.ood_score[440:]) > auroc(base[:400], base[440:]) + 0.1
    meta = result.meta
    assert meta["base_method"] == "atd" and meta["images"] == 480 and meta["negative_rule"] == "threshold-free rule"
    assert 1 <= meta["negatives"] <= 32 and meta["negative_seeds"] <= 9  # 2% of 480
    assert meta["positives"] == 0 and meta["config"]["negative_fraction"] == 0.02  # the measured defaults
    assert meta["base_probability"] == "1 - score"
    # the former defaults (5% seeds, 16 images per positive proxy) lift the cluster too
    former = adaptive_scores(scorer, planted, AdaptConfig(negative_fraction=0.05, positives_per_class=16))
    assert auroc(former.ood_score[:400], former.ood_score[400:]) > auroc(base[:400], base[400:]) + 0.1
    assert former.meta["positives"] >= 1 and former.meta["negative_seeds"] <= 24  # 5% of 480


@pytest.mark.parametrize("method", ["mcm", "energy"])
def test_methods_without_a_rule_seed_the_negatives_above_the_otsu_cut(tiny_model, vectors, planted, method):
    scorer = oodfilter.Scorer(tiny_model, vectors, method, device="cpu")
    base = scorer.score_features(torch.from_numpy(planted)).ood_score.numpy()
    result = adaptive_scores(scorer, planted)
    assert result.meta["negative_rule"] == "otsu cut" and result.meta["negatives"] >= 1
    assert result.meta["base_probability"] == ("1 - score" if method == "mcm" else "rank")
    assert auroc(result.ood_score[:400], result.ood_score[400:]) > auroc(base[:400], base[400:])


def test_the_same_input_gives_byte_identical_scores(tiny_model, vectors, planted, tmp_path):
    scorer = oodfilter.Scorer(tiny_model, vectors, "atd", device="cpu")
    stored = _memmap(tmp_path, planted)
    first = adaptive_scores(scorer, stored, AdaptConfig(chunk=64))
    again = adaptive_scores(scorer, stored, AdaptConfig(chunk=64))
    assert first.ood_score.tobytes() == again.ood_score.tobytes() and first.meta == again.meta
    # a torch tensor of the same (float16-stored) values gives the same scores as the memmap
    tensor = torch.from_numpy(np.asarray(stored, dtype=np.float32))
    assert adaptive_scores(scorer, tensor, AdaptConfig(chunk=64)).ood_score.tobytes() == first.ood_score.tobytes()


def test_the_features_are_read_a_chunk_at_a_time_never_whole(tiny_model, vectors, planted, tmp_path):
    scorer = oodfilter.Scorer(tiny_model, vectors, "atd", device="cpu")
    rows = CountingRows(_memmap(tmp_path, planted))
    result = adaptive_scores(scorer, rows, AdaptConfig(chunk=50, positives_per_class=40))
    assert max(rows.reads) <= 50  # no read returned more than one chunk
    # two streamed passes plus the gathered seeds, nothing more
    seeds = result.meta["negative_seeds"] + result.meta["positive_seeds"]
    assert sum(rows.reads) == 2 * len(planted) + seeds


def test_negatives_come_only_from_images_the_first_pass_rates_ood(tiny_model, vectors, planted, tmp_path):
    scorer = oodfilter.Scorer(tiny_model, vectors, "atd", device="cpu")
    rated = scorer.score_features(torch.from_numpy(planted)).is_ood.numpy()  # type: ignore[union-attr]
    rows = CountingRows(planted)
    scorer.threshold = 0.0  # a threshold meant for the result is not the first pass's rule
    adaptive_scores(scorer, rows, AdaptConfig(negative_fraction=0.5, positives_per_class=16))
    assert scorer.threshold == 0.0  # and it is given back
    negatives, positives = rows.gathered  # gathered in that order
    assert len(negatives) == rated.sum() and rated[negatives].all()
    assert not rated[positives].any()


def test_negative_seeds_are_the_most_confident_and_capped():
    scores = np.array([0.9, 0.1, 0.95, 0.8, 0.2, 0.99, 0.3, 0.85, 0.4, 0.5], dtype=np.float32)
    rated = scores > 0.6
    index, cut, rule = negative_seeds(scores, rated, fraction=0.2, most=100)
    assert index.tolist() == [2, 5] and cut == pytest.approx(0.8) and rule == "threshold-free rule"
    index, _, _ = negative_seeds(scores, rated, fraction=0.5, most=3)
    assert index.tolist() == [0, 2, 5]
    index, cut, _ = negative_seeds(scores, np.zeros(10, dtype=bool), fraction=0.5, most=3)
    assert len(index) == 0 and cut == float("inf")
    index, cut, rule = negative_seeds(scores, None, fraction=0.5, most=10)
    assert rule == "otsu cut" and (scores[index] > 0.6).all() and len(index) == 5


def test_positive_seeds_are_the_lowest_scores_per_top_class():
    scores = np.array([0.5, 0.1, 0.3, 0.2, 0.9, 0.05], dtype=np.float32)
    top = np.array([0, 0, 0, 1, 1, 1], dtype=np.int32)
    candidates = np.array([True, True, True, True, True, False])
    assert positive_seeds(scores, top, candidates, 2).tolist() == [1, 2, 3, 4]


def test_otsu_cut_splits_two_groups():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.8, 0.03, 100)])
    assert 0.3 < otsu_cut(scores) < 0.7


def test_spherical_kmeans_finds_planted_clusters_deterministically():
    rng = np.random.default_rng(2)
    centres = _unit(rng.normal(size=(3, 16)))
    x = _unit(np.repeat(centres, 30, axis=0) + 0.05 * rng.normal(size=(90, 16)))
    found = spherical_kmeans(x, 3, 30, seed=0)
    assert found.shape == (3, 16) and np.allclose(np.linalg.norm(found, axis=1), 1)
    assert (np.max(found @ centres.T, axis=0) > 0.99).all()  # each planted centre has a centroid on it
    assert spherical_kmeans(x, 3, 30, seed=0).tobytes() == found.tobytes()
    assert spherical_kmeans(x[:0], 3, 30, seed=0).shape == (0, 16)


def test_without_negatives_the_id_side_holds_all_the_mass():
    f = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    w = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    q = proxy_id_probability(f, w, w[:0], w[:0], 100.0)
    assert torch.equal(q, torch.ones(5, dtype=torch.float64))
    q = proxy_id_probability(f, w, w[:0], f[:1], 100.0)  # a negative proxy on the first image
    assert q[0] < 0.01 and (q > 0).all() and (q <= 1).all()


def test_a_clean_dataset_is_barely_changed(tiny_model, vectors, planted):
    """0% OOD: only the images the first pass itself rates OOD, at most 2% of them, seed negatives."""
    scorer = oodfilter.Scorer(tiny_model, vectors, "atd", device="cpu")
    clean = planted[:400]
    base = scorer.score_features(torch.from_numpy(clean)).ood_score.numpy()
    result = adaptive_scores(scorer, clean)
    assert result.meta["negative_seeds"] <= 8
    assert (result.ood_score >= base - 1e-6).all()  # q_proxy <= 1: the pass only raises scores
    order_kept = np.corrcoef(np.argsort(np.argsort(base)), np.argsort(np.argsort(result.ood_score)))[0, 1]
    assert order_kept > 0.7  # the ranking a threshold cuts stays mostly as it was (0.80 measured)
    # nothing rated OOD: no negative proxy, the scores are the first pass's
    scorer_mcm = oodfilter.Scorer(tiny_model, vectors, "mcm", device="cpu")
    same = np.full((30, clean.shape[1]), 0.0, dtype=np.float32)
    same[:] = clean[0]
    flat = adaptive_scores(scorer_mcm, same)
    assert flat.meta["negatives"] == 0
    np.testing.assert_allclose(flat.ood_score, scorer_mcm.score_features(torch.from_numpy(same)).ood_score.numpy(),
                               atol=1e-6)


def test_a_threshold_decides_on_the_adapted_scores(tiny_model, vectors, planted):
    scorer = oodfilter.Scorer(tiny_model, vectors, "atd", device="cpu")
    result = adaptive_scores(scorer, planted, AdaptConfig(threshold=0.5))
    assert result.is_ood is not None and result.is_ood.tolist() == (result.ood_score > 0.5).tolist()
    # further features are scored against the same proxies exactly as the dataset's own
    again = score_with_proxies(scorer, result.proxies, torch.from_numpy(planted[:100]))
    assert again.tobytes() == result.ood_score[:100].tobytes()


def test_bad_inputs_are_refused(tiny_model, vectors, planted):
    scorer = oodfilter.Scorer(tiny_model, vectors, "atd", device="cpu")
    with pytest.raises(InputError, match="at least 20 images"):
        adaptive_scores(scorer, planted[:19])
    with pytest.raises(InputError, match="another model"):
        adaptive_scores(scorer, np.zeros((40, 7), dtype=np.float32))
    for bad in ({"negatives": 0}, {"negative_fraction": 0.0}, {"negative_fraction": 0.9}, {"chunk": 0},
                {"threshold": float("nan")}, {"positives_per_class": True},
                {"positives_per_class": -1}):
        with pytest.raises(InputError, match="adapt option"):
            AdaptConfig(**bad)  # type: ignore[arg-type]


def test_real_images_rescored_with_the_tiny_model(tiny_model, real_images):
    """The pass on features of real photos and textures: finite probabilities, proxies from both sides."""
    names = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray", "stingray",
             "cock", "hen", "ostrich", "brambling", "goldfinch", "house finch", "junco", "indigo bunting", "robin"]
    # mcm: the tiny model's (random) no-branch rates every one of these OOD, leaving atd no ID side
    scorer = oodfilter.Scorer(tiny_model, oodfilter.build_class_vectors(tiny_model, names), "mcm", device="cpu")
    features = scorer.encode_images(torch.stack([_tiny_image(path) for path in real_images]))
    result = adaptive_scores(scorer, features.numpy(), AdaptConfig(negative_fraction=0.05, positives_per_class=16))
    assert result.ood_score.shape == (len(real_images),) and np.isfinite(result.ood_score).all()
    assert result.meta["images"] == 24 and result.meta["negative_seeds"] <= 1  # 5% of 24
    assert result.meta["negative_rule"] == "otsu cut" and result.meta["positives"] >= 1
    assert (result.ood_score >= scorer.score_features(features).ood_score.numpy() - 1e-6).all()


def _tiny_image(path: Path) -> torch.Tensor:
    from oodfilter import load_rgb_image

    image = load_rgb_image(path).resize((32, 32))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
