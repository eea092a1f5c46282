"""Dataset-aware rescoring: proxies built from the scan itself, then every image scored against them.

A data filter sees the whole dataset before it decides. The pass (after AdaNeg, NeurIPS'24, and InterNeg,
CVPR'26; our own formulation):

1. **First pass.** The features are streamed in chunks and scored with the scorer's method (the *base*
   score). Only the scores, the top classes and the first pass's own OOD rule are kept (a few bytes per
   image), plus the running mean image feature.
2. **Proxies.** *Negative seeds* are the images the first pass rates OOD (its threshold-free rule, or for
   a method without one the Otsu cut of the base scores), at most ``negative_fraction`` of the dataset
   and ``max_negative_seeds``, the most confident first; their features are gathered and clustered by a
   seeded spherical k-means into at most ``negatives`` *negative proxies*. *Positive proxies* are
   per-class prototypes: the mean of the ``positives_per_class`` images rated most confidently ID with
   that top class (off by default, ``positives_per_class=0``: they lowered the AUROC on the dev
   mixture, see :class:`AdaptConfig`). With ``shift``, each proxy p is carried across the modality gap,
   p' = normalize(p − mean image + mean class vector), so that an image's cosine to a proxy is on the
   scale of its cosine to a class vector (InterNeg's point: image-to-image cosines are far higher than
   the image-to-text cosines the logit scale was trained for, and would swamp the class vectors).
3. **Second pass.** Each image f is scored against the class vectors W (C), positives P and negatives N
   with the model's logit scale s: q_proxy = Σ_{W,P} exp(s·cos) / Σ_{W,P,N} exp(s·cos), the probability
   mass on the in-distribution side. It is combined with the base score by a product of ID
   probabilities, no tuned weight: q_base = 1 − base score for a method whose scores are probabilities
   (all in [0, 1]: atd, ctw, msp, mcm), else the share of the dataset's base scores above the image's;
   ood = 1 − q_base · q_proxy.

No negative proxy means q_proxy = 1: a dataset the first pass rates clean is scored as before. ``is_ood``
is None unless ``AdaptConfig.threshold`` is given: the adapted score's scale depends on the proxies this
dataset produced, so no fixed rule means the same thing on every dataset; decide with a threshold, a
keep fraction, or a calibration fitted on adapted scores (``oodfilter rescore --adapt --id-recall``).

Measured (``benchmarks/world/adapt_defaults.py``, world A seeds 0-2, Tiny-ImageNet training images, 3000 ID
with 0-50% near-OOD): the pass *lowered* the AUROC of atd and mcm in every mixture with OOD (mean 0.95-0.97
→ 0.92-0.94 with the defaults); atd's rule rated none of a clean dataset OOD (scores unchanged), mcm's Otsu
cut did (probe AUROC 0.970 → 0.909). The pass is opt-in; measure it on your own data before relying on it.

Memory: never more than ``chunk`` feature rows at once (a numpy memmap is read by slices and by sorted
row indices), plus N scores, N top classes and N decisions. Deterministic: the same features, scorer and
config give byte-identical scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from oodfilter.errors import InputError
from oodfilter.scoring.adapt_config import AdaptConfig

if TYPE_CHECKING:
    from oodfilter.scoring.scorer import Scorer

__all__ = ["AdaptConfig", "AdaptProxies", "AdaptiveResult", "adaptive_scores", "otsu_cut", "proxy_id_probability",
           "spherical_kmeans"]


@dataclass(frozen=True)
class AdaptProxies:
    """What the first pass built; scores any features of the same image tower (the scan's, calibration images').

    Attributes:
        class_vectors: (C, D) the ID class vectors (yes tower).
        positives: (P, D) positive proxies (per-class prototypes of confident ID images).
        negatives: (K, D) negative proxies (centroids of confident OOD images).
        logit_scale: The model's logit scale s.
        base_sorted: The scan's base scores, sorted, when they are not probabilities (q_base is then a
            rank among them); None when q_base = 1 − base score.

    """

    class_vectors: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    logit_scale: float
    base_sorted: np.ndarray | None

    def score(self, base_scores: np.ndarray, features: torch.Tensor) -> np.ndarray:
        """Adapted OOD scores (B,) float32 of features (B, D) whose base scores are ``base_scores`` (B,)."""
        q_base = base_id_probability(base_scores, self.base_sorted)  # (B,)
        q_proxy = proxy_id_probability(features, self.class_vectors, self.positives, self.negatives,
                                       self.logit_scale).numpy()  # (B,)
        return (1.0 - q_base * q_proxy).astype(np.float32)


@dataclass
class AdaptiveResult:
    """The dataset-aware scores of N images, in input order.

    Attributes:
        ood_score: (N,) float32, higher = more OOD.
        is_ood: (N,) bool decisions (``AdaptConfig.threshold``), or None.
        meta: What the pass used (JSON-able): base method, counts of seeds and proxies, the cut, the config.
        proxies: The proxies, to score further features (calibration images) the same way.

    """

    ood_score: np.ndarray
    is_ood: np.ndarray | None
    meta: dict[str, Any]
    proxies: AdaptProxies


@dataclass(frozen=True)
class _FirstPass:
    scores: np.ndarray  # (N,) float32 base scores
    rated_ood: np.ndarray | None  # (N,) bool: the method's own threshold-free rule, or None
    top: np.ndarray  # (N,) int32 top class
    mean_image: np.ndarray  # (D,) float64 mean feature


def adaptive_scores(scorer: Scorer, features: Any, config: AdaptConfig | None = None) -> AdaptiveResult:
    """Score every image against class vectors plus proxies built from the dataset itself.

    Args:
        scorer: A ready scorer; its method gives the first-pass (base) score. Its ``threshold`` is ignored
            here (the first pass uses the method's own rule); decide on the result with
            ``AdaptConfig.threshold``.
        features: (N, D) L2-normalised image features: a numpy array or memmap (read ``config.chunk``
            rows at a time, never whole), or a torch tensor.
        config: The pass's settings.

    Returns:
        The adapted scores, decisions (or None), meta and proxies.

    Raises:
        InputError: fewer images than ``config.min_images``, or features of another dimension than the
            scorer's class vectors.

    """
    config = config or AdaptConfig()
    total = int(features.shape[0])
    if features.ndim != 2 or features.shape[1] != scorer.class_vectors.dim:
        raise InputError(f"the features have shape {tuple(features.shape)}, the class vectors dimension "
                         f"{scorer.class_vectors.dim}: they come from another model")
    if total < config.min_images:
        raise InputError(f"the dataset-aware pass needs at least {config.min_images} images to learn from, got "
                         f"{total}; rescore without --adapt")
    first = _first_pass(scorer, features, config.chunk)
    probability = bool(total == 0 or (first.scores.min() >= 0.0 and first.scores.max() <= 1.0))
    negative_index, cut, rule = negative_seeds(first.scores, first.rated_ood, config.negative_fraction,
                                               config.max_negative_seeds)
    candidates = ~first.rated_ood if first.rated_ood is not None else first.scores <= cut
    positive_index = positive_seeds(first.scores, first.top, candidates, config.positives_per_class)
    seeds = _gather(features, negative_index, config.chunk)  # (n, D)
    count = min(config.negatives, math.ceil(len(negative_index) / 4))
    negatives = spherical_kmeans(seeds, count, config.kmeans_iterations, config.seed)  # (K, D)
    clustered = len(negatives)
    if config.vet_negatives and clustered:  # the first pass must rate the proxy itself OOD
        negatives = negatives[_rates_ood(scorer, negatives, None if first.rated_ood is not None else cut)]
    positives = class_prototypes(_gather(features, positive_index, config.chunk), first.top[positive_index])  # (P, D)
    vectors = scorer.class_vectors.yes.detach().cpu().double()  # (C, D)
    if config.shift:
        text_mean = vectors.mean(dim=0).numpy()  # (D,)
        negatives = shift_proxies(negatives, first.mean_image, text_mean)
        positives = shift_proxies(positives, first.mean_image, text_mean)
    proxies = AdaptProxies(class_vectors=vectors.float(), positives=torch.from_numpy(positives).float(),
                           negatives=torch.from_numpy(negatives).float(), logit_scale=float(scorer.model.logit_scale),
                           base_sorted=None if probability else np.sort(first.scores, kind="stable"))
    scores = np.empty(total, dtype=np.float32)
    for start in range(0, total, config.chunk):
        stop = min(total, start + config.chunk)
        scores[start:stop] = proxies.score(first.scores[start:stop], _read(features, start, stop))
    meta = {
        "base_method": scorer.method.name, "images": total, "negative_rule": rule,
        "rated_ood": int(first.rated_ood.sum()) if first.rated_ood is not None else int((first.scores > cut).sum()),
        "negative_cut": float(cut), "negative_seeds": len(negative_index), "negatives": len(negatives),
        "negatives_dropped": int(clustered - len(negatives)),
        "positive_seeds": len(positive_index), "positives": len(positives),
        "base_probability": "1 - score" if probability else "rank", "logit_scale": proxies.logit_scale,
        "config": config.as_meta(),
    }
    decisions = scores.astype(np.float64) > config.threshold if config.threshold is not None else None
    return AdaptiveResult(ood_score=scores, is_ood=decisions, meta=meta, proxies=proxies)


def score_with_proxies(scorer: Scorer, proxies: AdaptProxies, features: Any, chunk: int = 4096) -> np.ndarray:
    """Adapted OOD scores (N,) float32 of further features (N, D) against proxies a pass already built.

    The base scores come from ``scorer`` (the pass's scorer); used to fit a calibration on known-ID images
    scored exactly as the scan's images were.
    """
    total = int(features.shape[0])
    scores = np.empty(total, dtype=np.float32)
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        block = _read(features, start, stop)  # (B, D)
        base = scorer.score_features(block).ood_score.numpy().astype(np.float32)  # (B,)
        scores[start:stop] = proxies.score(base, block)
    return scores


def _first_pass(scorer: Scorer, features: Any, chunk: int) -> _FirstPass:
    """Stream the features once: base scores, the method's own OOD rule, top classes, the mean feature."""
    total, dim = int(features.shape[0]), int(features.shape[1])
    scores = np.empty(total, dtype=np.float32)
    top = np.empty(total, dtype=np.int32)
    rated: np.ndarray | None = np.empty(total, dtype=bool) if scorer.method.threshold_free else None
    feature_sum = np.zeros(dim, dtype=np.float64)
    threshold, scorer.threshold = scorer.threshold, None  # the method's own rule, not a threshold for the result
    try:
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            block = _read(features, start, stop)  # (B, D)
            result = scorer.score_features(block)
            scores[start:stop] = result.ood_score.numpy()
            top[start:stop] = result.top_class.numpy()
            if rated is not None and result.is_ood is not None:
                rated[start:stop] = result.is_ood.numpy()
            feature_sum += block.double().sum(dim=0).numpy()
    finally:
        scorer.threshold = threshold
    return _FirstPass(scores, rated, top, feature_sum / max(total, 1))


def _rates_ood(scorer: Scorer, proxies: np.ndarray, cut: float | None) -> np.ndarray:
    """Whether the first pass rates each (K, D) proxy, scored as an image, OOD: (K,) bool.

    ``cut`` None: the method's own rule; else base score > ``cut``. A centroid of images that are only
    borderline (the most OOD-looking images of a clean dataset) averages their noise away and looks ID.
    """
    threshold, scorer.threshold = scorer.threshold, None
    try:
        result = scorer.score_features(torch.from_numpy(proxies).float())
    finally:
        scorer.threshold = threshold
    if cut is None and result.is_ood is not None:
        return result.is_ood.numpy().astype(bool)
    return result.ood_score.double().numpy() > (cut if cut is not None else -np.inf)


def negative_seeds(scores: np.ndarray, rated_ood: np.ndarray | None, fraction: float,
                   most: int) -> tuple[np.ndarray, float, str]:
    """Pick the negative seeds: images rated OOD, the highest base scores first, at most a share of the dataset.

    Args:
        scores: (N,) base scores.
        rated_ood: (N,) the method's own OOD rule, or None (then the Otsu cut of ``scores`` decides).
        fraction: At most this share of N.
        most: At most this many.

    Returns:
        (sorted row indices (n,), the cut of the rule (for the method's own rule: the lowest score it rates
        OOD, inf when none), the rule's name).

    """
    if rated_ood is not None:
        eligible, rule = rated_ood, "threshold-free rule"
        cut = float(scores[rated_ood].min()) if rated_ood.any() else float("inf")
    else:
        cut, rule = otsu_cut(scores), "otsu cut"
        eligible = scores > cut
    limit = min(most, math.floor(fraction * len(scores)))
    index = np.flatnonzero(eligible)  # (m,) ascending
    if len(index) > limit:  # the most confident: highest score, ties to the lower index (stable sort)
        order = np.argsort(-scores[index].astype(np.float64), kind="stable")[:limit]
        index = np.sort(index[order])
    return index.astype(np.int64), cut, rule


def positive_seeds(scores: np.ndarray, top: np.ndarray, candidates: np.ndarray, per_class: int) -> np.ndarray:
    """Row indices (sorted) of the ``per_class`` lowest base scores among ``candidates`` (N,) per top class."""
    index = np.flatnonzero(candidates)  # (m,)
    if not len(index):
        return index.astype(np.int64)
    order = np.lexsort((index, scores[index], top[index]))  # by class, then score, then row
    ranked = index[order]
    classes = top[ranked]
    starts = np.r_[0, np.flatnonzero(np.diff(classes)) + 1]  # first position of each class
    position = np.arange(len(ranked)) - np.repeat(starts, np.diff(np.r_[starts, len(ranked)]))
    return np.sort(ranked[position < per_class]).astype(np.int64)


def otsu_cut(scores: np.ndarray, bins: int = 256) -> float:
    """Return the Otsu threshold of (N,) scores: the cut that maximises the between-group variance of a histogram.

    Where several cuts tie (an empty stretch between two groups), the middle one.
    """
    values = np.asarray(scores, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return high
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)[:-1].astype(np.float64)  # (bins-1,) below each candidate cut
    mass = np.cumsum(counts * centres)[:-1]
    total, total_mass = float(counts.sum()), float((counts * centres).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau across an empty gap: its middle
    return float(edges[1:-1][int(best[len(best) // 2])])


def spherical_kmeans(x: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Cluster (n, D) unit vectors into at most ``k`` unit centroids (K, D) by cosine, deterministically.

    k-means++ seeding from ``numpy.random.default_rng(seed)``, then Lloyd steps until the assignment stops
    changing or ``iterations`` ran; an emptied cluster is dropped. n = 0 or k = 0 gives (0, D).
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0 or k < 1:
        return np.zeros((0, x.shape[1]), dtype=np.float64)
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = [x[int(rng.integers(len(x)))]]
    nearest = 1.0 - x @ centres[0]  # (n,) cosine distance to the nearest centre
    for _ in range(1, k):
        weights = np.clip(nearest, 0.0, None)
        if weights.sum() <= 0:
            break
        pick = int(rng.choice(len(x), p=weights / weights.sum()))
        centres.append(x[pick])
        nearest = np.minimum(nearest, 1.0 - x @ x[pick])
    c = np.stack(centres)  # (K, D)
    assignment = np.full(len(x), -1)
    for _ in range(iterations):
        new = np.argmax(x @ c.T, axis=1)  # (n,)
        if np.array_equal(new, assignment):
            break
        assignment = new
        sums = np.zeros_like(c)
        np.add.at(sums, assignment, x)
        keep = np.bincount(assignment, minlength=len(c)) > 0
        c = _normalise(sums[keep])
        assignment = np.cumsum(keep)[assignment] - 1 if not keep.all() else assignment
    return c


def class_prototypes(x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Return the unit mean (P, D) of (n, D) features per class of ``classes`` (n,), in ascending class order."""
    if len(x) == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float64)
    labels, inverse = np.unique(classes, return_inverse=True)
    sums = np.zeros((len(labels), x.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, x)
    return _normalise(sums)


def shift_proxies(proxies: np.ndarray, mean_image: np.ndarray, mean_text: np.ndarray) -> np.ndarray:
    """Carry (K, D) image proxies across the modality gap: normalize(p − mean image + mean class vector)."""
    if len(proxies) == 0:
        return proxies
    return _normalise(proxies - mean_image[None, :] + mean_text[None, :])


def proxy_id_probability(features: torch.Tensor, class_vectors: torch.Tensor, positives: torch.Tensor,
                         negatives: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Return q = Σ_{W,P} exp(s·cos) / Σ_{W,P,N} exp(s·cos): (B, D) features, (C|P|K, D) vectors → (B,).

    The share of a softmax over class vectors, positive and negative proxies that lands on the ID side;
    1 exactly when there is no negative proxy.
    """
    f = features.float()
    inside = logit_scale * (f @ torch.cat([class_vectors, positives]).float().T)  # (B, C + P)
    if negatives.shape[0] == 0:
        return torch.ones(f.shape[0], dtype=torch.float64)
    outside = logit_scale * (f @ negatives.float().T)  # (B, K)
    ins = torch.logsumexp(inside.double(), dim=1)  # (B,)
    everything = torch.logsumexp(torch.cat([inside, outside], dim=1).double(), dim=1)  # (B,)
    return torch.exp(ins - everything)


def base_id_probability(scores: np.ndarray, base_sorted: np.ndarray | None) -> np.ndarray:
    """q_base (B,) float64: 1 − score for probability scores, else the share of the scan's scores above it."""
    values = np.asarray(scores, dtype=np.float64)
    if base_sorted is None:
        return np.clip(1.0 - values, 0.0, 1.0)
    below = np.searchsorted(base_sorted, values, side="left") + np.searchsorted(base_sorted, values, side="right")
    return 1.0 - below / (2.0 * max(len(base_sorted), 1))


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _read(features: Any, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) as a (B, D) float32 CPU tensor (a memmap reads only those rows)."""
    block = features[start:stop]
    if isinstance(block, torch.Tensor):
        return block.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))


def _gather(features: Any, index: np.ndarray, chunk: int) -> np.ndarray:
    """Rows ``index`` (sorted) as (n, D) float64, read ``chunk`` rows at a time."""
    parts = [np.zeros((0, int(features.shape[1])), dtype=np.float64)]
    for start in range(0, len(index), chunk):
        part = index[start : start + chunk]
        if isinstance(features, torch.Tensor):
            parts.append(features[torch.from_numpy(part)].detach().cpu().double().numpy())
        else:
            parts.append(np.asarray(features[part], dtype=np.float64))
    return np.concatenate(parts)
