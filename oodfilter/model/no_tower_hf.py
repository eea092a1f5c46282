"""CLIPN's no-tower on a Hugging Face text tower (open_clip's ``HFTextEncoder``, e.g. BERT or MiniLM)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from open_clip.hf_model import HFTextEncoder
from torch import nn

from oodfilter.errors import InputError, UnsupportedModelError
from oodfilter.model.hf_text import hf_tower_settings
from oodfilter.model.no_prompts import DEFAULT_NUM_PROMPTS, PromptedNoTower
from oodfilter.model.text_cut import hf_token_lengths


class PromptedEmbedding(nn.Module):
    """A token embedding that adds a prompt to what it returns, while one is set (:meth:`adding`).

    Hugging Face encoders such as BERT sum the word, position and token-type embeddings before their
    first LayerNorm, so adding the prompt to the word embeddings is adding it to their sum, as CLIPN
    adds it to CLIP's token + positional embeddings.
    """

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self._added: torch.Tensor | None = None

    @contextlib.contextmanager
    def adding(self, prompt: torch.Tensor) -> Iterator[None]:
        """Add ``prompt`` ((B, L, W) or (1, L, W)) to the embeddings of every call inside the block."""
        self._added = prompt
        try:
            yield
        finally:
            self._added = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embed token ids (B, L) to (B, L, W), plus the prompt being added, if any."""
        embedded = self.embedding(input_ids)
        if self._added is None:
            return embedded
        return embedded + self._added.to(embedded.dtype)


class HFNoTextTower(PromptedNoTower):
    """The no-text encoder ψⁿᵒ of CLIPN on a Hugging Face text tower (docs/method.md §1).

    A full copy of the yes tower (transformer, pooler, projection) whose input word embeddings are
    wrapped in a :class:`PromptedEmbedding`, and the no-prompts of
    :class:`~oodfilter.model.no_prompts.PromptedNoTower`, one per token position of the tokenizer's
    context length. The copy always runs without dropout, in training too: a CLIP text tower has none,
    and so a fresh no-tower computes what the yes tower computes and training is deterministic.

    Args:
        tower: The yes tower to copy.
        context_length: The tokenizer's context length, the number L of token ids per text (an HF
            tower's own ``context_length`` is its largest number of positions, often 512).
        num_prompts: Number of learnable no-prompts.

    Raises:
        UnsupportedModelError: the tower's transformer does not expose its input embeddings.

    """

    def __init__(self, tower: HFTextEncoder, *, context_length: int, num_prompts: int = DEFAULT_NUM_PROMPTS) -> None:
        super().__init__()
        self.text = copy.deepcopy(tower)
        backbone = self.text.transformer
        embedding = backbone.get_input_embeddings()
        weight = getattr(embedding, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise UnsupportedModelError(
                f"CLIPN cannot place its no-prompts on this Hugging Face text tower: {type(backbone).__name__} "
                "has no token embedding table (get_input_embeddings()). Use a BERT-like text tower."
            )
        backbone.set_input_embeddings(PromptedEmbedding(embedding))
        self._init_prompts(num_prompts, context_length, int(weight.shape[1]))
        self.requires_grad_(True)
        self.text.eval()

    @property
    def output_dim(self) -> int:
        """Dimension D of the features the tower returns."""
        return int(self.text.output_dim)

    def settings_id(self) -> str:
        """Return the pooling and padding settings, which with the weights decide the tower's output."""
        return hf_tower_settings(self.text)

    def train(self, mode: bool = True) -> HFNoTextTower:
        """Set training mode (prompt draws); the copied transformer stays in eval mode, without dropout."""
        super().train(mode)
        self.text.eval()
        return self

    def token_lengths(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Return the token positions each text needs for its exact features, (B,), or None when it needs all.

        See :func:`oodfilter.model.text_cut.hf_token_lengths`.
        """
        return hf_token_lengths(self.text, tokens) if type(self) is HFNoTextTower else None

    def forward(self, tokens: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
        """Encode token ids (B, L) to L2-normalised no-text features (B, D).

        ``L`` may be below the context length (a batch cut to its longest text, see :meth:`token_lengths`):
        the prompt is then cut to the same positions.

        Raises:
            InputError: the texts have more token positions than the prompts cover.

        """
        if tokens.shape[-1] > self.context_length:
            raise InputError(
                f"the no-tower's prompts cover {self.context_length} token positions but the texts have "
                f"{tokens.shape[-1]}; tokenize them with the model's tokenizer (CLIPN.tokenize)"
            )
        embedding = self.text.transformer.get_input_embeddings()
        if not isinstance(embedding, PromptedEmbedding):  # replaced after construction
            raise UnsupportedModelError("the no-tower's input embeddings were replaced; rebuild the model")
        prompt = self.select_prompts(tokens.shape[0], choice)[:, : tokens.shape[-1]]  # (B or 1, L, W)
        with embedding.adding(prompt):
            features = self.text(tokens)
        if isinstance(features, tuple):  # towers built with output_tokens
            features = features[0]
        return F.normalize(features, dim=-1)
