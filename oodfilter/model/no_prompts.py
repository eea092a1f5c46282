"""The learnable no-prompts that every CLIPN no-tower carries, and how each text picks one of them."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_NUM_PROMPTS = 16


class PromptedNoTower(nn.Module):
    """Base of the no-text towers ψⁿᵒ: ``num_prompts`` additive prompts of shape (context_length, width).

    The prompts start at zero, so that a fresh tower computes exactly what the yes tower computes. In
    training each text uses one of the ``num_prompts + 1`` options (each prompt or their mean), drawn
    uniformly; in eval it always uses the mean (docs/method.md §1). Subclasses copy a kind of text tower,
    add the selected prompt to its input embeddings in ``forward(tokens, choice)``, and call
    :meth:`_init_prompts` once they know the tower's context length and width.
    """

    prompts: nn.Parameter

    def _init_prompts(self, num_prompts: int, context_length: int, width: int) -> None:
        self.prompts = nn.Parameter(torch.zeros(num_prompts, context_length, width))

    @property
    def num_prompts(self) -> int:
        """Number of learnable prompts (16 in the paper)."""
        return int(self.prompts.shape[0])

    @property
    def context_length(self) -> int:
        """Number of token positions L a prompt covers."""
        return int(self.prompts.shape[1])

    @property
    def output_dim(self) -> int:
        """Dimension D of the features the tower returns."""
        raise NotImplementedError

    def settings_id(self) -> str:
        """Return the settings besides the weights that decide the tower's output (part of its fingerprint)."""
        raise NotImplementedError

    def token_lengths(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Return the token positions each text of ``tokens`` (B, L) needs for its exact features, (B,).

        A batch cut to its texts' largest length encodes to the same features. None (this default):
        the tower needs the whole context; subclasses that know better say so.
        """
        return None

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
