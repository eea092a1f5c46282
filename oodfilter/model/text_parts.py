"""Access to the pieces of an open_clip text tower, whatever class holds them."""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch
from open_clip.transformer import TextTransformer
from torch import nn

from oodfilter.errors import UnsupportedModelError


@dataclass(frozen=True)
class TextParts:
    """The modules and settings that make up a CLIP-style text tower."""

    token_embedding: nn.Embedding
    positional_embedding: nn.Parameter
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: nn.Parameter | nn.Linear | None
    attn_mask: torch.Tensor | None
    pool_type: str
    eos_id: int | None


def text_parts(clip: nn.Module) -> TextParts:
    """Return the text-tower pieces of an open_clip ``CLIP`` or of a ``CustomTextCLIP`` with a CLIP text tower.

    Hugging Face text towers have none of these pieces; :mod:`oodfilter.model.towers` handles them.

    Raises:
        UnsupportedModelError: the text tower is of another kind.

    """
    if isinstance(clip, open_clip.CLIP):  # the text tower's pieces sit on the CLIP itself
        return _parts_of(clip, pool_type=clip.text_pool_type, eos_id=getattr(clip, "text_eos_id", None))
    tower = getattr(clip, "text", None)
    if isinstance(tower, TextTransformer) and tower.cls_emb is None and not tower.use_pad_mask:
        return _parts_of(tower, pool_type=tower.pool_type, eos_id=tower.eos_id)
    kind = type(tower).__name__ if tower is not None else type(clip).__name__
    raise UnsupportedModelError(
        f"CLIPN needs a CLIP-style text transformer (token + positional embeddings) to carry its no-prompts; "
        f"this model's text tower is a {kind}. Use an open_clip model with a CLIP text tower (e.g. ViT-B-16) "
        "or a Hugging Face text tower (hf_model_name in its text_cfg)."
    )


def _parts_of(holder: nn.Module, *, pool_type: str, eos_id: int | None) -> TextParts:
    return TextParts(
        token_embedding=holder.token_embedding,  # type: ignore[arg-type]
        positional_embedding=holder.positional_embedding,  # type: ignore[arg-type]
        transformer=holder.transformer,  # type: ignore[arg-type]
        ln_final=holder.ln_final,  # type: ignore[arg-type]
        text_projection=holder.text_projection,  # type: ignore[arg-type]
        attn_mask=holder.attn_mask,  # type: ignore[arg-type]
        pool_type=pool_type,
        eos_id=eos_id,
    )


def encode_with_parts(parts: TextParts, tokens: torch.Tensor, added: torch.Tensor | None = None) -> torch.Tensor:
    """Run a CLIP-style text tower on token ids (B, L) → unnormalised features (B, D), as open_clip's ``encode_text``.

    ``L`` may be shorter than the tower's context: the positional embedding, ``added`` (a prompt of
    (B or 1, context, W) added to the input embeddings) and the attention mask are cut to the first ``L``
    positions. With a causal mask, features pooled at a position below ``L`` are then those of the full
    context (see :mod:`oodfilter.model.text_cut`); at the full context every slice is the whole tensor.
    """
    length = tokens.shape[-1]
    cast_dtype = cast_dtype_of(parts.transformer)
    x = parts.token_embedding(tokens).to(cast_dtype)  # (B, L, W)
    x = x + parts.positional_embedding[:length].to(cast_dtype)
    if added is not None:
        x = x + added[:, :length].to(cast_dtype)
    mask = parts.attn_mask
    if mask is not None and mask.shape[-1] != length:
        mask = mask[:length, :length].contiguous()  # (L, L)
    x = parts.transformer(x, attn_mask=mask)
    x = parts.ln_final(x)
    x = pool_tokens(x, tokens, parts.pool_type, parts.eos_id)  # (B, W)
    projection = parts.text_projection
    if isinstance(projection, nn.Linear):
        return projection(x)
    if projection is not None:
        return x @ projection  # (B, D)
    return x


def cast_dtype_of(transformer: nn.Module) -> torch.dtype:
    """Return the dtype a text transformer computes in (its ``get_cast_dtype()``, else its weights' dtype)."""
    getter = getattr(transformer, "get_cast_dtype", None)
    if callable(getter):
        dtype = getter()
        if isinstance(dtype, torch.dtype):
            return dtype
    return next(transformer.parameters()).dtype


def pool_tokens(x: torch.Tensor, tokens: torch.Tensor, pool_type: str, eos_id: int | None) -> torch.Tensor:
    """Pool per-token features to one vector per text, as CLIP does.

    Args:
        x: Per-token features, (B, L, W).
        tokens: Token ids, (B, L).
        pool_type: ``argmax`` (end-of-text is the largest id), ``eos``, ``first``, ``last`` or ``none``.
        eos_id: End-of-text id, needed for ``eos``.

    Returns:
        (B, W) pooled features, or ``x`` unchanged for ``none``.

    """
    rows = torch.arange(x.shape[0], device=x.device)
    if pool_type == "argmax":
        return x[rows, tokens.argmax(dim=-1)]
    if pool_type == "eos":
        if eos_id is None:
            raise UnsupportedModelError("text pooling 'eos' needs an end-of-text token id")
        return x[rows, (tokens == eos_id).int().argmax(dim=-1)]
    if pool_type == "first":
        return x[:, 0]
    if pool_type == "last":
        return x[:, -1]
    return x
