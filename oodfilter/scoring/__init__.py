"""OOD scores: pure functions, built-in methods (a registry), the batched Scorer and its factory."""

from oodfilter.deprecation import deprecated_attribute, warn_deprecated
from oodfilter.scoring import functional
from oodfilter.scoring.factory import build_scorer
from oodfilter.scoring.files import score_files
from oodfilter.scoring.methods import FeatureBatch, ScoreMethod, ScoringContext, choose_method, score_methods
from oodfilter.scoring.result import ScoreResult
from oodfilter.scoring.scorer import Scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.rows import ManifestRow

_DEPRECATED = {"scorers": "score_methods"}


def __getattr__(name: str) -> object:
    if name == "ImageScore":
        warn_deprecated("oodfilter.scoring.ImageScore", "oodfilter.sinks.rows.ManifestRow")
        return ManifestRow
    return deprecated_attribute(__name__, globals(), _DEPRECATED, name)


__all__ = [
    "FeatureBatch",
    "ScoreMethod",
    "ScoreResult",
    "Scorer",
    "ScorerSpec",
    "ScoringContext",
    "build_scorer",
    "choose_method",
    "functional",
    "score_files",
    "score_methods",
]
