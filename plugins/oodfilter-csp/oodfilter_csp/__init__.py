"""CSP for oodfilter: negatives from a conjugated semantic pool, and the fused CLIPN + negatives score."""

from oodfilter_csp.functional import atd_over_negatives, fused_scores, group_logsumexp, negative_id_probability
from oodfilter_csp.negatives import NegativePool, PoolConfig, mine_pool
from oodfilter_csp.pool import SUPERCLASSES, conjugated_labels, load_modifiers
from oodfilter_csp.scorer import CSP, Fused

__all__ = ["CSP", "SUPERCLASSES", "Fused", "NegativePool", "PoolConfig", "atd_over_negatives", "conjugated_labels",
           "fused_scores", "group_logsumexp", "load_modifiers", "mine_pool", "negative_id_probability"]
