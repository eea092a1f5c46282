"""CLIPN's training losses (docs/method.md §2) as pure tensor functions."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class LossParts(NamedTuple):
    """The CLIPN objective and its terms (scalars).

    Attributes:
        total: 0.5·(match + mismatch + tso), what is minimised.
        match: −mean_i log q_ii (a matched caption must beat its own negation).
        mismatch: −mean_{i≠j} log(1 − q_ij) (for another image's caption, "no" is right).
        tso: mean_i [2 − sqrt(2 − 2⟨g_i, gⁿᵒ_i⟩ + 1e-4)] (push each no-embedding away from its yes-embedding).
    """

    total: torch.Tensor
    match: torch.Tensor
    mismatch: torch.Tensor
    tso: torch.Tensor


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def yes_no_logits(
    image: torch.Tensor, text_yes: torch.Tensor, text_no: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """Return z_ij = s·(⟨f_i, g_j⟩ − ⟨f_i, gⁿᵒ_j⟩), so that q_ij = σ(z_ij).

    Args:
        image: (N, D) normalised image features f.
        text_yes: (M, D) normalised yes-text features g.
        text_no: (M, D) normalised no-text features gⁿᵒ.
        logit_scale: The fixed scale s.

    Returns:
        (N, M) logits.
    """
    return logit_scale * (image @ text_yes.T - image @ text_no.T)


def clipn_loss(
    image: torch.Tensor,
    text_yes: torch.Tensor,
    text_no: torch.Tensor,
    logit_scale: float,
    groups: torch.Tensor | None = None,
) -> LossParts:
    """Image-text binary-opposite loss plus text semantic-opposite loss over a batch of N pairs.

    Args:
        image: (N, D) normalised image features (row i belongs to caption i).
        text_yes: (N, D) normalised yes-text features of the captions.
        text_no: (N, D) normalised no-text features of the same captions.
        logit_scale: The fixed scale s.
        groups: Optional (N,) ids of what each caption says (its class, or its text). Pairs i ≠ j of the
            same group are left out of the mismatch term: "no <caption j>" is not right for image i when
            caption j describes image i just as well. With unique captions (web data, the paper's
            setting) this changes nothing.
    """
    n = image.shape[0]
    image, text_yes, text_no = (_wide(t) for t in (image, text_yes, text_no))  # half → float32
    z = yes_no_logits(image, text_yes, text_no, logit_scale)  # (N, N)
    diagonal = torch.eye(n, dtype=torch.bool, device=z.device)
    match = -F.logsigmoid(z[diagonal]).mean()  # log q_ii
    mismatched = ~diagonal
    if groups is not None:
        mismatched &= groups[:, None] != groups[None, :]
    # log(1 − q_ij) = log σ(−z_ij); a batch without mismatched pairs has no such term.
    mismatch = -F.logsigmoid(-z[mismatched]).mean() if mismatched.any() else z.new_zeros(())
    cos = (text_yes * text_no).sum(dim=-1)  # (N,)
    tso = (2.0 - torch.sqrt(2.0 - 2.0 * cos + 1e-4)).mean()
    return LossParts(0.5 * (match + mismatch + tso), match, mismatch, tso)
