"""Reference-fitted score methods: ``knn`` and ``mahalanobis``, fitted on features of known in-distribution images.

Both are text-free scores of the image feature alone: they need reference features of ID images
(``reference=`` paths on a :class:`~oodfilter.scoring.spec.ScorerSpec`, ``--reference`` on the command
line; a manifest with stored features of the same image tower is read without encoding), fit on them in
:meth:`prepare`, and refuse to run without them. Neither has a threshold-free rule: a decision needs a
threshold, a calibration or a keep fraction. The math is in :mod:`oodfilter.scoring.fitted_math`; like
:mod:`oodfilter.scoring.methods`, this module imports no torch until a method is prepared.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from oodfilter.errors import InputError
from oodfilter.scoring.methods import FeatureBatch, PrerequisiteContext, ScoreMethod, ScoringContext, score_methods

if TYPE_CHECKING:
    import torch

    from oodfilter.scoring.fitted_math import GaussianFit
    from oodfilter.scoring.functional import ScoreOutput

logger = logging.getLogger(__name__)

KNN_BACKENDS = ("auto", "faiss", "torch")
MAHALANOBIS_LABELS = ("pseudo", "single")


def needs_reference_message(method: str) -> str:
    """Return the refusal of a reference-fitted method that was given no reference images."""
    return (f"method '{method}' is fitted on known in-distribution images and none were given: pass --reference "
            "ID_IMAGES (files, folders, globs, or a manifest with stored features; repeatable) on the command line, "
            "or reference=[paths] to ScorerSpec / OODFilter (Scorer: reference_features=)")


def _reference(method: str, context: ScoringContext) -> torch.Tensor:
    """Return the context's reference features as (N, D) float32 unit vectors on the scoring device."""
    import torch

    features = context.reference_features
    if features is None:
        raise InputError(needs_reference_message(method))
    if features.ndim != 2 or features.shape[0] == 0:
        raise InputError(f"method '{method}' needs at least one reference feature, got shape {tuple(features.shape)}")
    reference = torch.nn.functional.normalize(features.to(context.device, torch.float32), dim=-1)  # (N, D)
    if not bool(torch.isfinite(reference).all()):
        raise InputError(f"the reference features of method '{method}' hold non-finite values")
    return reference


class FittedMethod(ScoreMethod):
    """A method fitted on reference ID features: refuses without them, before any text is encoded."""

    needs_reference: ClassVar[bool] = True

    def check_prerequisites(self, context: PrerequisiteContext) -> None:
        """Refuse to run without reference features (the message names ``--reference``)."""
        if not context.reference_features:
            raise InputError(needs_reference_message(self.name))

    def fitted_meta(self) -> dict[str, Any]:
        """Return what the fit chose (JSON-able), for the manifest's meta; empty before :meth:`prepare`."""
        return {}


@score_methods.register("knn")
class KNN(FittedMethod):
    """Deep nearest neighbours (Sun et al. 2022): ood = distance to the k-th nearest reference feature.

    Args:
        k: Which neighbour; None takes about 0.1% of the reference, at least 1
            (:func:`~oodfilter.scoring.fitted_math.knn_k_for`, the paper's k/N).
        backend: ``faiss`` (``IndexFlatIP``; on a GPU index when faiss has GPU support and scoring runs
            on CUDA), ``torch`` (exact search by matrix product), or ``auto`` (faiss when importable).

    """

    name = "knn"

    def __init__(self, k: int | None = None, *, backend: str = "auto") -> None:
        if k is not None and k < 1:
            raise InputError(f"knn: k must be at least 1, got {k}")
        if backend not in KNN_BACKENDS:
            raise InputError(f"knn: backend must be one of {', '.join(KNN_BACKENDS)}, got '{backend}'")
        self.k = k
        self.backend = backend
        self.k_used: int | None = None
        self.backend_used: str | None = None
        self._reference: torch.Tensor | None = None
        self._index: Any = None
        self._gpu_resources: Any = None  # kept alive as long as the GPU index

    def prepare(self, context: ScoringContext) -> None:
        """Index the reference features (faiss or a torch matrix on the scoring device)."""
        from oodfilter.scoring.fitted_math import knn_k_for

        reference = _reference(self.name, context)
        count = reference.shape[0]
        k = self.k if self.k is not None else knn_k_for(count)
        if k > count:
            raise InputError(f"knn: k = {k} needs at least {k} reference images, got {count}")
        faiss = _faiss() if self.backend != "torch" else None
        if self.backend == "faiss" and faiss is None:
            raise InputError("knn backend 'faiss' needs the faiss package: pip install faiss-cpu (or faiss-gpu)")
        self.k_used = k
        if faiss is None:
            self._reference, self._index, self.backend_used = reference, None, "torch"
        else:
            self._index, self._gpu_resources = _faiss_index(faiss, reference, context.device)
            self._reference, self.backend_used = None, "faiss-gpu" if self._gpu_resources is not None else "faiss"
        logger.info("knn: k = %d over %d reference features (%s)", k, count, self.backend_used)

    def fitted_meta(self) -> dict[str, Any]:
        """Return the k and the search back end chosen."""
        return {"k": self.k_used, "backend": self.backend_used} if self.k_used is not None else {}

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """(B,) distances to the k-th nearest reference feature; no threshold-free decision."""
        import numpy as np
        import torch

        from oodfilter.scoring import fitted_math
        from oodfilter.scoring.functional import ScoreOutput

        if self.k_used is None:
            raise InputError("knn was not prepared; create it through oodfilter.Scorer or build_scorer")
        if self._index is None:
            reference = self._reference if self._reference is not None else batch.features.new_zeros(0, 0)
            score = fitted_math.knn_distance(batch.features, reference.to(batch.features.device), self.k_used)
            return ScoreOutput(score, None)
        queries = np.ascontiguousarray(batch.features.detach().float().cpu().numpy())  # (B, D)
        cosines, _ = self._index.search(queries, self.k_used)  # (B, k), descending
        kth = torch.from_numpy(np.ascontiguousarray(cosines[:, self.k_used - 1])).to(batch.features.device)  # (B,)
        return ScoreOutput(fitted_math.distance_from_cosine(kth), None)


@score_methods.register("mahalanobis")
class Mahalanobis(FittedMethod):
    """Mahalanobis distance to the nearest class Gaussian (Lee et al. 2018), fitted on reference features.

    The reference images carry no labels: each takes the yes classifier's top class as its pseudo-label
    (``labels="pseudo"``; a class no reference image falls in has no Gaussian), or all form one Gaussian
    (``labels="single"``). The classes share one covariance, shrunk towards a scaled identity (Ledoit-Wolf
    unless ``shrinkage`` is given), as the reference set is small beside the feature dimension.

    Args:
        labels: ``pseudo`` or ``single``.
        shrinkage: λ in [0, 1] (Σ = (1 − λ)·S + λ·(tr S / D)·I); None estimates it.

    """

    name = "mahalanobis"

    def __init__(self, *, labels: str = "pseudo", shrinkage: float | None = None) -> None:
        if labels not in MAHALANOBIS_LABELS:
            raise InputError(f"mahalanobis: labels must be one of {', '.join(MAHALANOBIS_LABELS)}, got '{labels}'")
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise InputError(f"mahalanobis: shrinkage must be in [0, 1], got {shrinkage}")
        self.labels = labels
        self.shrinkage = shrinkage
        self.fit: GaussianFit | None = None

    def prepare(self, context: ScoringContext) -> None:
        """Pseudo-label the reference features and fit the class means and shared covariance."""
        import torch

        from oodfilter.scoring.fitted_math import fit_gaussians

        reference = _reference(self.name, context)  # (N, D)
        if self.labels == "pseudo":
            yes = context.class_vectors.yes.to(reference.device, torch.float32)  # (C, D)
            labels = (reference @ yes.T).argmax(dim=1)  # (N,)
        else:
            labels = torch.zeros(reference.shape[0], dtype=torch.long, device=reference.device)
        self.fit = fit_gaussians(reference, labels, self.shrinkage)
        logger.info("mahalanobis: %d Gaussians over %d reference features, shrinkage %.3f", len(self.fit.means),
                    reference.shape[0], self.fit.shrinkage)

    def fitted_meta(self) -> dict[str, Any]:
        """Return the labels, the number of Gaussians and the shrinkage used."""
        if self.fit is None:
            return {}
        return {"labels": self.labels, "gaussians": len(self.fit.means), "shrinkage": round(self.fit.shrinkage, 6)}

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """(B,) squared Mahalanobis distances to the nearest class mean; no threshold-free decision."""
        from oodfilter.scoring import fitted_math
        from oodfilter.scoring.functional import ScoreOutput

        if self.fit is None:
            raise InputError("mahalanobis was not prepared; create it through oodfilter.Scorer or build_scorer")
        score = fitted_math.mahalanobis_min(batch.features, self.fit.means, self.fit.precision)
        return ScoreOutput(score.to(batch.features.device), None)


def _faiss() -> Any:
    """Return the faiss module, or None when it is not installed (the torch search is used instead)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_index(faiss: Any, reference: torch.Tensor, device: torch.device) -> tuple[Any, Any]:
    """Return an exact inner-product index of ``reference`` (N, D); on the GPU when faiss can and scoring runs there."""
    import numpy as np

    data = np.ascontiguousarray(reference.detach().cpu().numpy(), dtype=np.float32)  # (N, D)
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    if device.type == "cuda" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, device.index or 0, index), resources
    return index, None
