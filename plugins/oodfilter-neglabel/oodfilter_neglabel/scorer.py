"""The NegLabel scorer (Jiang et al., ICLR 2024) as an oodfilter plugin.

ID score = mean over groups g of  Σ_c e^{⟨f,w_c⟩/τ} / (Σ_c e^{⟨f,w_c⟩/τ} + Σ_{j∈G_g} e^{⟨f,n_j⟩/τ}),
τ = 0.01, computed in log space (τ = 0.01 overflows float32 otherwise). oodfilter reports
ood_score = 1 − ID score (higher = more OOD).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import torch

from oodfilter.errors import InputError
from oodfilter.scoring.functional import ScoreOutput
from oodfilter.scoring.methods import FeatureBatch, ScoreMethod, ScoringContext
from oodfilter.text.class_vectors import build_class_vectors
from oodfilter_neglabel.mining import mine_negatives
from oodfilter_neglabel.vocabulary import load_vocabulary

logger = logging.getLogger(__name__)


def neglabel_scores(
    cosines_id: torch.Tensor, cosines_neg: torch.Tensor, groups: torch.Tensor, temperature: float = 0.01
) -> torch.Tensor:
    """Return NegLabel OOD scores (B,) = 1 − mean_g σ(LSE_c(cos_id/τ) − LSE_{j∈g}(cos_neg/τ)).

    Args:
        cosines_id: (B, C) cosines to the ID class vectors.
        cosines_neg: (B, M) cosines to the negative-label vectors.
        groups: (M,) group id (0..G-1) of each negative label.
        temperature: τ.
    """
    lse_id = torch.logsumexp(cosines_id.float() / temperature, dim=1)  # (B,)
    count = int(groups.max()) + 1
    per_group = []
    for g in range(count):
        members = cosines_neg[:, groups == g].float() / temperature  # (B, M_g)
        lse_neg = torch.logsumexp(members, dim=1)  # (B,)
        per_group.append(torch.sigmoid(lse_id - lse_neg))  # Σ_id / (Σ_id + Σ_neg)
    return 1.0 - torch.stack(per_group, dim=1).mean(dim=1)


class NegLabel(ScoreMethod):
    """NegLabel: ID class names against negative labels mined from a large vocabulary.

    Args:
        vocabulary: Candidate words; default the shipped WordNet nouns (~67k).
        ratio: Share of candidates kept as negatives (~15%, ~10k of the shipped list).
        quantile: Closeness of a candidate = this quantile of its cosines to the ID classes.
        groups: Number of groups the negatives are split into (scores are averaged over groups).
        temperature: τ.
        seed: Seed of the split into groups.
    """

    name: ClassVar[str] = "neglabel"

    def __init__(
        self,
        vocabulary: Sequence[str] | None = None,
        *,
        ratio: float = 0.15,
        quantile: float = 0.95,
        groups: int = 100,
        temperature: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.vocabulary = list(vocabulary) if vocabulary is not None else None
        self.ratio, self.quantile, self.groups, self.temperature, self.seed = ratio, quantile, groups, temperature, seed
        self.negatives: torch.Tensor | None = None  # (M, D)
        self.negative_names: list[str] = []
        self.group_of: torch.Tensor | None = None  # (M,)

    def prepare(self, context: ScoringContext) -> None:
        """Encode the vocabulary (cached by the text index), mine the negatives, split them into groups."""
        words = self.vocabulary if self.vocabulary is not None else list(load_vocabulary())
        id_names = {name.casefold() for name in context.class_vectors.class_names}
        words = [w for w in dict.fromkeys(words) if w.casefold() not in id_names]
        if not words:
            raise InputError("NegLabel's vocabulary has no word outside the ID class names")
        templates = _candidate_templates(context.class_vectors.templates)
        # the vocabulary is encoded in the precision the class vectors were (older oodfilter: fp32)
        vocab = build_class_vectors(context.model, words, templates=templates, cache_dir=context.cache_dir,
                                    include_no=False, precision=getattr(context, "text_precision", "fp32"))
        keep = mine_negatives(context.class_vectors, vocab.yes, ratio=self.ratio, quantile=self.quantile)
        self.negatives = vocab.yes[keep].to(context.device)
        self.negative_names = [vocab.class_names[i] for i in keep.tolist()]
        count = min(self.groups, len(keep))
        order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(self.seed))
        self.group_of = torch.empty(len(keep), dtype=torch.long)
        self.group_of[order] = torch.arange(len(keep)) % count
        self.group_of = self.group_of.to(context.device)
        logger.info("NegLabel: %d negatives from %d candidates in %d groups", len(keep), len(words), count)

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score a batch (needs :meth:`prepare` first)."""
        if self.negatives is None or self.group_of is None:
            raise InputError("NegLabel was not prepared; create it through oodfilter.Scorer")
        cosines_neg = batch.features @ self.negatives.T  # (B, M)
        return ScoreOutput(neglabel_scores(batch.cosines_yes, cosines_neg, self.group_of, self.temperature), None)


# Encoding ~67k candidate words with CLIPN's 128 templates would be 8.6M captions: beyond this many ID
# templates the candidates use the single "photo" template (NegLabel's own setting is one template).
MAX_CANDIDATE_TEMPLATES = 8


def _candidate_templates(id_templates: Sequence[str]) -> list[str] | str:
    """Return the templates the candidate words are encoded with: the ID ones, unless there are too many."""
    return list(id_templates) if len(id_templates) <= MAX_CANDIDATE_TEMPLATES else "photo"
