"""OOD scores: pure functions, built-in methods (a registry), the batched Scorer and its factory.

The names below are imported on first access (see :mod:`oodfilter.lazy`), so that ``oodfilter plugins``
reads the method registry without importing the Scorer, its factory and the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oodfilter.deprecation import deprecated_attribute, warn_deprecated
from oodfilter.lazy import lazy_attribute, lazy_dir

_EXPORTS = {
    "AdaptConfig": "oodfilter.scoring.adaptive",
    "AdaptiveResult": "oodfilter.scoring.adaptive",
    "FeatureBatch": "oodfilter.scoring.methods",
    "ManifestRow": "oodfilter.sinks.rows",  # not in __all__: reachable here as before the rows moved to sinks
    "ScoreMethod": "oodfilter.scoring.methods",
    "ScoreResult": "oodfilter.scoring.result",
    "Scorer": "oodfilter.scoring.scorer",
    "ScorerSpec": "oodfilter.scoring.spec",
    "ScoringContext": "oodfilter.scoring.methods",
    "adaptive_scores": "oodfilter.scoring.adaptive",
    "build_scorer": "oodfilter.scoring.factory",
    "choose_method": "oodfilter.scoring.methods",
    "functional": "oodfilter.scoring.functional",
    "score_files": "oodfilter.scoring.files",
    "score_methods": "oodfilter.scoring.methods",
}
_DEPRECATED = {"scorers": "score_methods"}

if TYPE_CHECKING:
    from oodfilter.scoring import functional
    from oodfilter.scoring.adaptive import AdaptConfig, AdaptiveResult, adaptive_scores
    from oodfilter.scoring.factory import build_scorer
    from oodfilter.scoring.files import score_files
    from oodfilter.scoring.methods import FeatureBatch, ScoreMethod, ScoringContext, choose_method, score_methods
    from oodfilter.scoring.result import ScoreResult
    from oodfilter.scoring.scorer import Scorer
    from oodfilter.scoring.spec import ScorerSpec
    from oodfilter.sinks.rows import ManifestRow  # noqa: F401 - reachable as before, not in __all__


def __getattr__(name: str) -> Any:
    if name == "ImageScore":
        warn_deprecated("oodfilter.scoring.ImageScore", "oodfilter.sinks.rows.ManifestRow")
        return lazy_attribute(__name__, globals(), _EXPORTS, "ManifestRow")
    if name in _DEPRECATED:
        lazy_attribute(__name__, globals(), _EXPORTS, _DEPRECATED[name])  # the new name, for the alias to return
        return deprecated_attribute(__name__, globals(), _DEPRECATED, name)
    return lazy_attribute(__name__, globals(), _EXPORTS, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _EXPORTS)


__all__ = [
    "AdaptConfig",
    "AdaptiveResult",
    "FeatureBatch",
    "ScoreMethod",
    "ScoreResult",
    "Scorer",
    "ScorerSpec",
    "ScoringContext",
    "adaptive_scores",
    "build_scorer",
    "choose_method",
    "functional",
    "score_files",
    "score_methods",
]
