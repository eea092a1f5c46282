"""CLIPN's "no" text tower: a trainable copy of CLIP's text tower plus learnable no-prompts."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from oodfilter.model.text_parts import TextParts, pool_tokens

DEFAULT_NUM_PROMPTS = 16


class NoTextTower(nn.Module):
    """The no-text encoder ψⁿᵒ of CLIPN (docs/method.md §1).

    A full copy of the yes text tower (token and positional embeddings, transformer, final norm,
    projection) and ``num_prompts`` additive prompts of shape (context_length, width), initialised to
    zero so that a fresh tower computes exactly what the yes tower computes. In training each sample
    uses one of the ``num_prompts + 1`` options (each prompt or their mean), drawn uniformly; in eval it
    always uses the mean.
    """

    def __init__(self, parts: TextParts, num_prompts: int = DEFAULT_NUM_PROMPTS) -> None:
        super().__init__()
        self.token_embedding = copy.deepcopy(parts.token_embedding)
        self.positional_embedding = nn.Parameter(parts.positional_embedding.detach().clone())
        self.transformer = copy.deepcopy(parts.transformer)
        self.ln_final = copy.deepcopy(parts.ln_final)
        projection = parts.text_projection
        self.text_projection: nn.Parameter | nn.Linear | None
        if projection is None or isinstance(projection, nn.Linear):
            self.text_projection = copy.deepcopy(projection)
        else:
            self.text_projection = nn.Parameter(projection.detach().clone())
        mask = parts.attn_mask
        self.register_buffer("attn_mask", None if mask is None else mask.detach().clone(), persistent=False)
        self.pool_type = parts.pool_type
        self.eos_id = parts.eos_id
        context_length, width = self.positional_embedding.shape
        self.prompts = nn.Parameter(torch.zeros(num_prompts, context_length, width))
        self.requires_grad_(True)

    @property
    def num_prompts(self) -> int:
        """Number of learnable prompts (16 in the paper)."""
        return int(self.prompts.shape[0])

    def prompt_options(self) -> torch.Tensor:
        """Return the ``num_prompts + 1`` prompt options: each prompt, then their mean, (P+1, L, W)."""
        return torch.cat([self.prompts, self.prompts.mean(dim=0, keepdim=True)], dim=0)

    def select_prompts(self, batch_size: int, choice: torch.Tensor | None = None) -> torch.Tensor:
        """Return the prompt added to each text of a batch, (B, L, W) or (1, L, W) for the mean.

        Args:
            batch_size: Number of texts.
            choice: Optional (B,) indices into :meth:`prompt_options`. Without it the mean prompt is
                used in eval mode and a uniformly random option per text in training mode.

        """
        if choice is None and self.training:
            choice = torch.randint(0, self.num_prompts + 1, (batch_size,), device=self.prompts.device)
        if choice is None:
            return self.prompts.mean(dim=0, keepdim=True)  # (1, L, W)
        return self.prompt_options()[choice]  # (B, L, W)

    def forward(self, tokens: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
        """Encode token ids (B, L) to L2-normalised no-text features (B, D)."""
        cast_dtype = _cast_dtype(self.transformer)
        x = self.token_embedding(tokens).to(cast_dtype)  # (B, L, W)
        x = x + self.positional_embedding.to(cast_dtype)
        x = x + self.select_prompts(tokens.shape[0], choice).to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = pool_tokens(x, tokens, self.pool_type, self.eos_id)  # (B, W)
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection  # (B, D)
        return F.normalize(x, dim=-1)


def _cast_dtype(transformer: nn.Module) -> torch.dtype:
    getter = getattr(transformer, "get_cast_dtype", None)
    if callable(getter):
        dtype = getter()
        if isinstance(dtype, torch.dtype):
            return dtype
    return next(transformer.parameters()).dtype
