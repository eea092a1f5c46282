"""OOD scores: pure functions, built-in methods (a registry) and the batched Scorer."""

from oodfilter.scoring import functional
from oodfilter.scoring.methods import FeatureBatch, ScoreMethod, ScoringContext, choose_method, scorers
from oodfilter.scoring.scorer import ImageScore, Scorer, ScoreResult

__all__ = [
    "FeatureBatch",
    "ImageScore",
    "ScoreMethod",
    "ScoreResult",
    "Scorer",
    "ScoringContext",
    "choose_method",
    "functional",
    "scorers",
]
