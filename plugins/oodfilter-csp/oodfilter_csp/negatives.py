"""Mining the negatives of the conjugated semantic pool: nouns and conjugated labels, each far from the ID classes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from oodfilter.errors import InputError
from oodfilter.scoring.methods import ScoringContext
from oodfilter.text.class_vectors import build_class_vectors
from oodfilter_csp.pool import SUPERCLASSES, conjugated_labels, load_modifiers
from oodfilter_neglabel import load_vocabulary, mine_negatives
from oodfilter_neglabel.scorer import MAX_CANDIDATE_TEMPLATES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolConfig:
    """Which pool the negatives are mined from, and how.

    Attributes:
        nouns: Noun candidates; None: NegLabel's shipped WordNet nouns (~67k).
        modifiers: Modifiers conjugated with the superclasses; None: the shipped adjectives (~2k).
        superclasses: The superclass nouns each modifier is conjugated with.
        ratio: Share of each part of the pool (nouns, conjugated labels) kept as negatives (NegLabel's 15%).
        quantile: Closeness of a candidate = this quantile of its cosines to the ID classes.
        groups: Number of groups the negatives are split into (scores are averaged over groups).
        seed: Seed of the split into groups.
        templates: Templates the candidates are encoded with; None: the ID class vectors' templates, or the
            single "photo" template beyond NegLabel's limit of 8 (~90k candidates × 128 templates is too many).
    """

    nouns: Sequence[str] | None = None
    modifiers: Sequence[str] | None = None
    superclasses: Sequence[str] = SUPERCLASSES
    ratio: float = 0.15
    quantile: float = 0.95
    groups: int = 100
    seed: int = 0
    templates: str | Sequence[str] | None = None


@dataclass(frozen=True)
class NegativePool:
    """The mined negatives: (M, D) vectors on the scoring device, their names, and (M,) group ids."""

    vectors: torch.Tensor
    names: list[str]
    group_of: torch.Tensor


def candidate_templates(id_templates: Sequence[str]) -> list[str] | str:
    """Return the templates the candidates are encoded with: the ID ones, unless more than NegLabel allows."""
    return list(id_templates) if len(id_templates) <= MAX_CANDIDATE_TEMPLATES else "photo"


def mine_pool(context: ScoringContext, config: PoolConfig) -> NegativePool:
    """Encode both parts of the pool (cached by the text index), mine each, and split the negatives into groups.

    Raises:
        InputError: a part of the pool is empty once the ID class names are taken out.

    """
    id_names = {name.casefold() for name in context.class_vectors.class_names}
    nouns = list(config.nouns) if config.nouns is not None else list(load_vocabulary())
    nouns = [w for w in dict.fromkeys(nouns) if w.strip() and w.casefold() not in id_names]
    modifiers = list(config.modifiers) if config.modifiers is not None else list(load_modifiers())
    conjugated = [w for w in conjugated_labels(modifiers, config.superclasses) if w.casefold() not in id_names]
    templates = config.templates if config.templates is not None else \
        candidate_templates(context.class_vectors.templates)
    vectors, names = [], []
    for part, words in (("nouns", nouns), ("conjugated labels", conjugated)):
        if not words:
            raise InputError(f"CSP's {part} are empty once the ID class names are taken out: give some")
        encoded = build_class_vectors(context.model, words, templates=templates, cache_dir=context.cache_dir,
                                      include_no=False, precision=getattr(context, "text_precision", "fp32"))
        keep = mine_negatives(context.class_vectors, encoded.yes, ratio=config.ratio, quantile=config.quantile)
        vectors.append(encoded.yes[keep])
        names += [encoded.class_names[i] for i in keep.tolist()]
        logger.info("CSP: %d negatives from %d %s", len(keep), len(words), part)
    pool = torch.cat(vectors).to(context.device)  # (M, D)
    count = min(config.groups, len(names))
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(config.seed))
    group_of = torch.empty(len(names), dtype=torch.long)
    group_of[order] = torch.arange(len(names)) % count
    return NegativePool(pool, names, group_of.to(context.device))
