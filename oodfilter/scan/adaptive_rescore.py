"""``rescore --adapt``: the dataset-aware pass (:mod:`oodfilter.scoring.adaptive`) over a manifest's stored features.

The pass runs once over the stored features (two streamed passes, never all rows in memory); the rows are
then written as any rescore writes them, with the adapted scores in place of the method's. A threshold
(``--threshold``, or one calibrated with ``--id-recall``) decides on the adapted scores; ``--calibrate-on``
images are scored against the proxies built from the scan, so the threshold keeps that share of them
under the same score the scan's rows get. A saved ``--calibration`` was fitted on another score and is
refused (see :func:`~oodfilter.scan.rescore_checks.check_options`).
"""

from __future__ import annotations

import numpy as np
import torch

from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import score_identity
from oodfilter.scoring.adaptive import AdaptConfig, AdaptiveResult, adaptive_scores, score_with_proxies
from oodfilter.scoring.result import ScoreResult
from oodfilter.scoring.scorer import Scorer


def adapted_method(method: str) -> str:
    """Return the name a decision or calibration on adapted scores records: ``<method>+adapt``."""
    return f"{method}+adapt"


def adapt_stored(scorer: Scorer, features: np.ndarray, config: AdaptConfig) -> AdaptiveResult:
    """Run the pass over (N, D) stored features (a memmap), without a decision (the rescore decides)."""
    settings = AdaptConfig(**{**config.as_meta(), "threshold": None})
    return adaptive_scores(scorer, features, settings)


def replace_scores(result: ScoreResult, adapted: AdaptiveResult, start: int, threshold: float | None) -> ScoreResult:
    """Put the adapted scores and decisions into ``result`` (rows ``start``.. of the stored features)."""
    scores = torch.from_numpy(adapted.ood_score[start : start + len(result)].copy())  # (B,)
    result.ood_score = scores
    result.is_ood = scores.double() > threshold if threshold is not None else None
    result.method = adapted_method(result.method)
    return result


def calibrate_adapted(scorer: Scorer, adapted: AdaptiveResult, features: torch.Tensor, id_recall: float,
                      source: str) -> Calibration:
    """Fit ``--id-recall`` on known-ID features (N, D) scored against the scan's proxies."""
    chunk = int(adapted.meta["config"]["chunk"])
    scores = score_with_proxies(scorer, adapted.proxies, features, chunk)
    described = f"{len(scores)} images from {source}" if source else f"{len(scores)} image features"
    return Calibration.fit(torch.from_numpy(scores.astype(np.float64)), id_recall,
                           method=adapted_method(scorer.method.name), identity=score_identity(scorer),
                           source=described)
