"""CLIPN's "no" text tower: a trainable copy of CLIP's text tower plus learnable no-prompts."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from oodfilter.model.no_prompts import DEFAULT_NUM_PROMPTS, PromptedNoTower
from oodfilter.model.text_cut import clip_style_lengths
from oodfilter.model.text_parts import TextParts, encode_with_parts

__all__ = ["DEFAULT_NUM_PROMPTS", "NoTextTower"]


class NoTextTower(PromptedNoTower):
    """The no-text encoder ψⁿᵒ of CLIPN (docs/method.md §1).

    A full copy of a CLIP-style yes text tower (token and positional embeddings, transformer, final
    norm, projection) and the no-prompts of :class:`~oodfilter.model.no_prompts.PromptedNoTower`, added
    to the token + positional embeddings.
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
        self._init_prompts(num_prompts, context_length, width)
        self.requires_grad_(True)

    @property
    def output_dim(self) -> int:
        """Dimension D of the features the tower returns."""
        if isinstance(self.text_projection, nn.Linear):
            return int(self.text_projection.out_features)
        if self.text_projection is not None:
            return int(self.text_projection.shape[1])
        return int(self.positional_embedding.shape[1])

    def settings_id(self) -> str:
        """Return the pooling settings, which with the weights decide the tower's output."""
        return f"{self.pool_type}|{self.eos_id}"

    def parts(self) -> TextParts:
        """Return the tower's own pieces, as :func:`~oodfilter.model.text_parts.text_parts` gives the yes tower's."""
        return TextParts(
            token_embedding=self.token_embedding,
            positional_embedding=self.positional_embedding,
            transformer=self.transformer,
            ln_final=self.ln_final,
            text_projection=self.text_projection,
            attn_mask=self.attn_mask,  # type: ignore[arg-type]  # a registered buffer, tensor or None
            pool_type=self.pool_type,
            eos_id=self.eos_id,
        )

    def token_lengths(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Return the token positions each text needs for its exact features, (B,), or None when it needs all.

        See :func:`oodfilter.model.text_cut.clip_style_lengths`.
        """
        return clip_style_lengths(self.parts(), tokens) if type(self) is NoTextTower else None

    def forward(self, tokens: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
        """Encode token ids (B, L) to L2-normalised no-text features (B, D).

        ``L`` may be below the context length (a batch cut to its longest text, see :meth:`token_lengths`):
        the prompt is then cut to the same positions.
        """
        prompt = self.select_prompts(tokens.shape[0], choice)  # (B or 1, context, W)
        return F.normalize(encode_with_parts(self.parts(), tokens, prompt), dim=-1)
