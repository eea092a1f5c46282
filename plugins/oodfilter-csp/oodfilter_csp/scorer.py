"""The CSP and fused score methods (registered as ``csp`` and ``fused`` under ``oodfilter.scorers``).

CSP (Chen et al., NeurIPS 2024) scores like NegLabel — ID score = mean over groups g of
Σ_c e^{⟨f,w_c⟩/τ} / (Σ_c e^{⟨f,w_c⟩/τ} + Σ_{j∈G_g} e^{⟨f,n_j⟩/τ}), τ = 0.01, ood = 1 − ID score — with
negatives mined from nouns *and* conjugated labels (see :mod:`oodfilter_csp.pool`). ``fused`` multiplies CLIPN's
ATD ID probability by CSP's (:func:`oodfilter_csp.functional.fused_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from oodfilter.errors import InputError
from oodfilter.scoring.functional import ScoreOutput
from oodfilter.scoring.methods import FeatureBatch, ScoreMethod, ScoringContext
from oodfilter_csp.functional import fused_scores
from oodfilter_csp.negatives import NegativePool, PoolConfig, mine_pool
from oodfilter_csp.pool import SUPERCLASSES
from oodfilter_neglabel import neglabel_scores


class _PoolMethod(ScoreMethod):
    """A method scoring against negatives mined from the conjugated semantic pool."""

    def __init__(
        self,
        nouns: Sequence[str] | None = None,
        modifiers: Sequence[str] | None = None,
        *,
        superclasses: Sequence[str] = SUPERCLASSES,
        ratio: float = 0.15,
        quantile: float = 0.95,
        groups: int = 100,
        seed: int = 0,
        templates: str | Sequence[str] | None = None,
        temperature: float = 0.01,
    ) -> None:
        self.config = PoolConfig(nouns=list(nouns) if nouns is not None else None,
                                 modifiers=list(modifiers) if modifiers is not None else None,
                                 superclasses=tuple(superclasses), ratio=ratio, quantile=quantile, groups=groups,
                                 seed=seed, templates=templates)
        self.temperature = temperature
        self.pool: NegativePool | None = None

    @property
    def negative_names(self) -> list[str]:
        """The mined negative labels (empty before :meth:`prepare`)."""
        return self.pool.names if self.pool is not None else []

    def prepare(self, context: ScoringContext) -> None:
        """Encode the pool (cached by the text index) and mine the negatives."""
        self.pool = mine_pool(context, self.config)

    def _prepared(self) -> NegativePool:
        if self.pool is None:
            raise InputError(f"{self.name} was not prepared; create it through oodfilter.Scorer")
        return self.pool


class CSP(_PoolMethod):
    """CSP: NegLabel's score against negatives from nouns and conjugated labels (modifier + superclass).

    Args:
        nouns: Noun candidates; default NegLabel's shipped WordNet nouns (~67k).
        modifiers: Modifiers conjugated with ``superclasses``; default the shipped WordNet adjectives (~2k).
        superclasses: Superclass nouns.
        ratio: Share of each part of the pool kept as negatives.
        quantile: Closeness of a candidate = this quantile of its cosines to the ID classes.
        groups: Number of groups the negatives are split into (scores are averaged over groups).
        seed: Seed of the split into groups.
        templates: Templates the candidates are encoded with (default: the ID templates, or "photo" beyond 8).
        temperature: τ.
    """

    name: ClassVar[str] = "csp"

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score a batch (needs :meth:`prepare` first)."""
        pool = self._prepared()
        cosines_neg = batch.features.float() @ pool.vectors.float().T  # (B, M)
        return ScoreOutput(neglabel_scores(batch.cosines_yes, cosines_neg, pool.group_of, self.temperature), None)


class Fused(_PoolMethod):
    """CLIPN's ATD and CSP's negatives as independent evidence (threshold-free).

    ood = 1 − (1 − ATD)(1 − CSP): an image is ID only if CLIPN's no-branch *and* the negatives say so;
    OOD iff ood > the best known class's probability q·softmax(ℓʸᵉˢ)_c·pʸᵉˢ_c (ATD's rule). Takes the
    options of :class:`CSP` (τ is CSP's, for q = 1 − CSP).
    """

    name: ClassVar[str] = "fused"
    needs_no_branch: ClassVar[bool] = True
    threshold_free: ClassVar[bool] = True

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score a batch (needs :meth:`prepare` first)."""
        pool = self._prepared()
        cosines_neg = batch.features.float() @ pool.vectors.float().T  # (B, M)
        return fused_scores(batch.logits_yes, batch.logits_no, batch.cosines_yes, cosines_neg, pool.group_of,
                            self.temperature)
