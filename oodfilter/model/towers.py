"""The two kinds of text tower CLIPN supports: which no-tower a model gets, and what identifies its yes tower.

CLIP-style towers (token + positional embeddings, open_clip's ``CLIP`` and ``TextTransformer``) get a
:class:`~oodfilter.model.no_tower.NoTextTower`; Hugging Face towers (open_clip's ``HFTextEncoder``) get
an :class:`~oodfilter.model.no_tower_hf.HFNoTextTower`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from oodfilter.errors import UnsupportedModelError
from oodfilter.model.hf_text import hf_text_tower, hf_tower_settings
from oodfilter.model.no_prompts import DEFAULT_NUM_PROMPTS, PromptedNoTower
from oodfilter.model.no_tower import NoTextTower
from oodfilter.model.no_tower_hf import HFNoTextTower
from oodfilter.model.text_parts import text_parts


def build_no_tower(clip: nn.Module, tokenizer: Any, num_prompts: int = DEFAULT_NUM_PROMPTS) -> PromptedNoTower:
    """Return a fresh no-tower for ``clip``: a copy of its text tower with zero no-prompts.

    Args:
        clip: An open_clip ``CLIP`` or ``CustomTextCLIP``.
        tokenizer: Its tokenizer; its context length sets the prompt length of a Hugging Face tower.
        num_prompts: Number of learnable no-prompts.

    Raises:
        UnsupportedModelError: the text tower is of a kind CLIPN cannot carry prompts on.

    """
    tower = hf_text_tower(clip)
    if tower is not None:
        return HFNoTextTower(tower, context_length=_context_length(tokenizer), num_prompts=num_prompts)
    return NoTextTower(text_parts(clip), num_prompts=num_prompts)


def yes_tower_identity(clip: nn.Module) -> tuple[list[tuple[str, torch.Tensor]], str]:
    """Return the yes tower's named tensors and settings: what decides its text features, for fingerprints."""
    tower = hf_text_tower(clip)
    if tower is not None:
        return [(f"text.{k}", v) for k, v in tower.state_dict().items()], hf_tower_settings(tower)
    parts = text_parts(clip)
    named = [(f"token_embedding.{k}", v) for k, v in parts.token_embedding.state_dict().items()]
    named += [("positional_embedding", parts.positional_embedding)]
    named += [(f"transformer.{k}", v) for k, v in parts.transformer.state_dict().items()]
    named += [(f"ln_final.{k}", v) for k, v in parts.ln_final.state_dict().items()]
    projection = parts.text_projection
    if isinstance(projection, nn.Linear):
        named += [(f"text_projection.{k}", v) for k, v in projection.state_dict().items()]
    elif projection is not None:
        named += [("text_projection", projection)]
    return named, f"{parts.pool_type}|{parts.eos_id}"


def _context_length(tokenizer: Any) -> int:
    length = getattr(tokenizer, "context_length", None)
    if isinstance(length, int) and not isinstance(length, bool) and length > 0:
        return length
    raise UnsupportedModelError(
        f"the tokenizer ({type(tokenizer).__name__}) states no context length, which sets how many token "
        "positions CLIPN's no-prompts cover; use the tokenizer open_clip.get_tokenizer gives for the model"
    )
