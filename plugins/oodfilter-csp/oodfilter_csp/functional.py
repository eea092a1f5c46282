"""CSP and fused score math as pure tensor functions (shape comments; higher = more OOD).

Notation as in :mod:`oodfilter.scoring.functional`: ℓʸᵉˢ, ℓⁿᵒ (B, C) logits s·cos to the ID class vectors,
ℓⁿᵉᵍ (B, M) logits s·cos to the M negative labels, split into G groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oodfilter.scoring.functional import ScoreOutput


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def group_logsumexp(logits: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """Return LSE_{j∈g} ℓ_j per group: (B, M) logits and (M,) group ids in 0..count-1 → (B, count).

    Stable for large logits (τ = 0.01): each group is shifted by its own maximum. An empty group gives −inf.
    """
    logits = _wide(logits)
    index = groups.to(logits.device).unsqueeze(0).expand_as(logits)  # (B, M)
    top = torch.full((logits.shape[0], count), float("-inf"), dtype=logits.dtype, device=logits.device)
    top = top.scatter_reduce(1, index, logits, reduce="amax")  # (B, G)
    shifted = torch.exp(logits - top.gather(1, index))  # (B, M), each ≤ 1
    sums = torch.zeros_like(top).scatter_add(1, index, shifted)  # (B, G)
    return top + torch.log(sums)


def negative_id_probability(
    cosines_yes: torch.Tensor, cosines_neg: torch.Tensor, groups: torch.Tensor, temperature: float = 0.01
) -> torch.Tensor:
    """Return NegLabel's ID probability (B,) = mean_g σ(LSE_c(cos_c/τ) − LSE_{j∈g}(cos_j/τ)) (1 − the CSP score).

    Args:
        cosines_yes: (B, C) cosines to the ID class vectors.
        cosines_neg: (B, M) cosines to the negative labels.
        groups: (M,) group id (0..G-1) of each negative label.
        temperature: τ.

    """
    cy, cn = _wide(cosines_yes), _wide(cosines_neg)
    lse_id = torch.logsumexp(cy / temperature, dim=1, keepdim=True)  # (B, 1)
    lse_neg = group_logsumexp(cn / temperature, groups, int(groups.max()) + 1)  # (B, G)
    return torch.sigmoid(lse_id - lse_neg).mean(dim=1)  # (B,)


def fused_scores(
    logits_yes: torch.Tensor, logits_no: torch.Tensor, cosines_yes: torch.Tensor, cosines_neg: torch.Tensor,
    groups: torch.Tensor, temperature: float = 0.01,
) -> ScoreOutput:
    """CLIPN's ATD and CSP's negatives as independent evidence: the ID probabilities multiply.

    a_c = softmax(ℓʸᵉˢ)_c · pʸᵉˢ_c (ATD's known classes, pʸᵉˢ_c = σ(ℓʸᵉˢ_c − ℓⁿᵒ_c)); q = NegLabel's ID
    probability (:func:`negative_id_probability`). Class c is known with probability q·a_c, so
    ood = 1 − q·Σ_c a_c = 1 − (1 − ATD)(1 − CSP); OOD iff ood > q·max_c a_c (ATD's rule: the unknown mass
    against the best known class). Parameter-free given the negatives (τ is NegLabel's). Without reachable
    negatives (q = 1) this is ATD. Chosen on a validation split (benchmarks/world/fused_validation.py).

    Args:
        logits_yes: (B, C) yes logits.
        logits_no: (B, C) no logits.
        cosines_yes: (B, C) cosines to the ID class vectors.
        cosines_neg: (B, M) cosines to the negative labels.
        groups: (M,) group id (0..G-1) of each negative label.
        temperature: NegLabel's τ.

    """
    ly, ln = _wide(logits_yes), _wide(logits_no)
    known = torch.softmax(ly, dim=1) * torch.sigmoid(ly - ln)  # (B, C) a_c
    q = negative_id_probability(cosines_yes, cosines_neg, groups, temperature).to(known.dtype)  # (B,)
    ood = (1.0 - q * known.sum(dim=1)).clamp(0.0, 1.0)  # (B,)
    return ScoreOutput(ood, ood > q * known.amax(dim=1))


def atd_over_negatives(
    logits_yes: torch.Tensor, logits_no: torch.Tensor, logits_neg: torch.Tensor, groups: torch.Tensor
) -> ScoreOutput:
    """ATD over a softmax whose denominator also holds the negative labels, averaged over groups of negatives.

    A candidate for ``fused`` that the validation ranked below :func:`fused_scores` (kept for that comparison).

    For group g: p^g = softmax over [ℓʸᵉˢ_1..C, ℓⁿᵉᵍ_{j∈g}]; pʸᵉˢ_c = σ(ℓʸᵉˢ_c − ℓⁿᵒ_c);
    p_ID^g = Σ_c p^g_c pʸᵉˢ_c. ood = 1 − mean_g p_ID^g: the "unknown" mass, Σ_{j∈g} p^g_j (NegLabel's part)
    plus Σ_c p^g_c pⁿᵒ_c (CLIPN's part). OOD iff ood > mean_g max_c p^g_c pʸᵉˢ_c: ATD's rule, the unknown
    class against the best known one. Without negatives (every ℓⁿᵉᵍ = −∞) this is ATD.

    Args:
        logits_yes: (B, C) yes logits.
        logits_no: (B, C) no logits.
        logits_neg: (B, M) logits to the negative labels, on the yes logits' scale.
        groups: (M,) group id (0..G-1) of each negative label.

    """
    ly, ln = _wide(logits_yes), _wide(logits_no)
    count = int(groups.max()) + 1
    lse_neg = group_logsumexp(logits_neg, groups, count)  # (B, G)
    lse_id = torch.logsumexp(ly, dim=1, keepdim=True)  # (B, 1)
    lse_all = torch.logaddexp(lse_id, lse_neg)  # (B, G) log of each group's softmax denominator
    known = ly + F.logsigmoid(ly - ln)  # (B, C) log e^{ℓʸᵉˢ_c} pʸᵉˢ_c
    p_id = torch.exp(torch.logsumexp(known, dim=1, keepdim=True) - lse_all).mean(dim=1)  # (B,)
    best = torch.exp(known.amax(dim=1, keepdim=True) - lse_all).mean(dim=1)  # (B,)
    ood = (1.0 - p_id).clamp(0.0, 1.0)
    return ScoreOutput(ood, ood > best)
