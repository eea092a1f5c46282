"""Score math as pure tensor functions (docs/method.md §3, §5).

Conventions: ``features`` are L2-normalised image embeddings f, (B, D); class matrices W are
L2-normalised, (C, D); ``logits_yes`` = s·f W_yesᵀ and ``logits_no`` = s·f W_noᵀ, (B, C). Every
``ood`` score is **higher = more OOD**. Inputs in half precision are computed in float32; float64
inputs stay float64.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ScoreOutput(NamedTuple):
    """What a score function returns for a batch.

    Attributes:
        ood_score: (B,) higher = more OOD.
        is_ood: (B,) bool threshold-free decision, or None when the method has no such rule.

    """

    ood_score: torch.Tensor
    is_ood: torch.Tensor | None


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def class_logits(features: torch.Tensor, classifier: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Return s·f Wᵀ: (B, D) features and (C, D) classifier → (B, C) logits."""
    return logit_scale * (_wide(features) @ _wide(classifier).T)


def clipn_yes_probabilities(logits_yes: torch.Tensor, logits_no: torch.Tensor) -> torch.Tensor:
    """pʸᵉˢ_c = σ(ℓʸᵉˢ_c − ℓⁿᵒ_c): (B, C) logits each → (B, C) probability of "yes, class c"."""
    return torch.sigmoid(_wide(logits_yes) - _wide(logits_no))


def ctw(logits_yes: torch.Tensor, logits_no: torch.Tensor) -> ScoreOutput:
    """CLIPN competing-to-win.

    ĉ = argmax_c softmax(ℓʸᵉˢ)_c; ood = pⁿᵒ_ĉ = σ(ℓⁿᵒ_ĉ − ℓʸᵉˢ_ĉ); OOD iff pⁿᵒ_ĉ > 0.5.

    Args:
        logits_yes: (B, C) yes logits.
        logits_no: (B, C) no logits.

    """
    ly, ln = _wide(logits_yes), _wide(logits_no)
    top = ly.argmax(dim=1, keepdim=True)  # (B, 1)
    p_no_top = torch.sigmoid(ln.gather(1, top) - ly.gather(1, top)).squeeze(1)  # (B,)
    return ScoreOutput(p_no_top, p_no_top > 0.5)


def atd(logits_yes: torch.Tensor, logits_no: torch.Tensor) -> ScoreOutput:
    """CLIPN agreeing-to-differ.

    p = softmax(ℓʸᵉˢ); p_{C+1} = Σ_c pⁿᵒ_c p_c; ood = p_{C+1}; OOD iff p_{C+1} > max_c pʸᵉˢ_c p_c.
    With C = 1, p_{C+1} = pⁿᵒ and ATD reduces to the yes/no probability of the single class.

    Args:
        logits_yes: (B, C) yes logits.
        logits_no: (B, C) no logits.

    """
    ly, ln = _wide(logits_yes), _wide(logits_no)
    p = torch.softmax(ly, dim=1)  # (B, C)
    p_no = torch.sigmoid(ln - ly)  # (B, C), = 1 - pʸᵉˢ without cancellation
    # A probability: a float32 softmax may sum to 1 + 1e-7, which the sum would carry past 1.
    p_unknown = (p_no * p).sum(dim=1).clamp(0.0, 1.0)  # (B,)
    best_known = (torch.sigmoid(ly - ln) * p).amax(dim=1)  # (B,)
    return ScoreOutput(p_unknown, p_unknown > best_known)


def msp(logits: torch.Tensor) -> ScoreOutput:
    """Maximum softmax probability: (B, C) logits → ood = 1 − max_c softmax(ℓ)_c, (B,)."""
    return ScoreOutput(1.0 - torch.softmax(_wide(logits), dim=1).amax(dim=1), None)


def max_logit(logits: torch.Tensor) -> ScoreOutput:
    """Maximum logit: (B, C) logits → ood = −max_c ℓ_c, (B,)."""
    return ScoreOutput(-_wide(logits).amax(dim=1), None)


def energy(logits: torch.Tensor, temperature: float = 1.0) -> ScoreOutput:
    """Energy: (B, C) logits → ood = −T·logsumexp_c(ℓ_c / T), (B,)."""
    return ScoreOutput(-temperature * torch.logsumexp(_wide(logits) / temperature, dim=1), None)


def mcm(cosines: torch.Tensor, temperature: float = 1.0) -> ScoreOutput:
    """Maximum concept matching: (B, C) cosines ⟨f, w_c⟩ → ood = 1 − max_c softmax(cos / T)_c, (B,)."""
    return ScoreOutput(1.0 - torch.softmax(_wide(cosines) / temperature, dim=1).amax(dim=1), None)


def top_class(logits_yes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the ID classifier's (top class index (B,), its softmax probability (B,)) from (B, C) logits."""
    probabilities = torch.softmax(_wide(logits_yes), dim=1)  # (B, C)
    top_prob, top = probabilities.max(dim=1)
    return top, top_prob
