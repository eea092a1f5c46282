"""How many token positions each text needs, and which text towers may encode a batch cut to them.

A tokenizer pads every text to its context (77 positions for CLIP), but a caption such as "a photo of a
goldfish." uses 8 of them. Cutting a batch to the positions its longest text needs gives the same
features, and costs a fraction of the full context, when nothing past those positions can reach the
features the tower pools:

* CLIP-style towers (open_clip's ``CLIP`` and ``TextTransformer``, and CLIPN's no-tower copy of them) with
  a causal attention mask pool one position: the end-of-text token (``argmax``, ``eos``) or the first.
  Under a causal mask a position sees only the positions up to it, so the positions after the pooled
  one never change it.
* Hugging Face towers (open_clip's ``HFTextEncoder``) of the architectures open_clip knows mask the
  padding out of attention (``attention_mask``), and their mean and CLS poolers ignore padded positions,
  so trailing padding changes nothing.

Anything else gets ``None`` and is encoded at the full context: a tower without a causal mask, whose
positions all see the padding; ``last`` or ``none`` pooling; open_clip's max pooler (which pools over
the padding); a subclass or a tower of an unknown kind, whose forward may differ.
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.hf_model import ClsLastHiddenStatePooler, ClsPooler, HFTextEncoder, MeanPooler
from open_clip.transformer import TextTransformer, Transformer
from torch import nn

from oodfilter.model.text_parts import TextParts, text_parts

# Poolings that read one position of a CLIP-style tower, and the HF poolers that read non-padded positions only.
_ONE_POSITION_POOLS = ("argmax", "eos", "first")
_PADDING_BLIND_POOLERS = (MeanPooler, ClsPooler, ClsLastHiddenStatePooler)
# The HF architectures open_clip builds (its arch_dict): each masks padded keys out of attention, and
# its positions are absolute from the start (BERT, RoBERTa), counted over non-padding tokens (M2M100) or
# relative (mT5), so cutting trailing padding moves no position.
_PADDING_MASKED_ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "mt5", "m2m_100")


def yes_token_lengths(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor | None:
    """Return the positions each text of ``tokens`` (B, L) needs in ``clip``'s own text tower, (B,), or None.

    None: the tower is of a kind whose features may depend on every position (see the module docstring).
    """
    tower = getattr(clip, "text", None)
    if isinstance(tower, HFTextEncoder):
        return hf_token_lengths(tower, tokens) if type(clip) is open_clip.CustomTextCLIP else None
    if type(clip) is open_clip.CLIP:
        return clip_style_lengths(text_parts(clip), tokens)
    if (type(clip) is open_clip.CustomTextCLIP and isinstance(tower, TextTransformer) and type(tower) is TextTransformer
            and tower.cls_emb is None and not tower.use_pad_mask and not tower.output_tokens):
        return clip_style_lengths(text_parts(clip), tokens)
    return None


def clip_style_lengths(parts: TextParts, tokens: torch.Tensor) -> torch.Tensor | None:
    """Return, for a CLIP-style tower, the positions up to and including each text's pooled one, (B,), or None.

    None unless the tower pools one position (``argmax``, ``eos``, ``first``), runs open_clip's
    ``Transformer`` and masks attention causally.
    """
    if parts.pool_type not in _ONE_POSITION_POOLS or type(parts.transformer) is not Transformer:
        return None
    context = int(parts.positional_embedding.shape[0])
    if not is_causal_mask(parts.attn_mask, context) or tokens.shape[-1] > context:
        return None
    rows = tokens.shape[0]
    if parts.pool_type == "argmax":  # the first largest id, as the pooling takes it
        pooled = tokens.argmax(dim=-1)
    elif parts.pool_type == "eos":
        if parts.eos_id is None:  # the tower itself cannot pool so
            return None
        pooled = torch.eq(tokens, parts.eos_id).to(torch.int32).argmax(dim=-1)
    else:
        pooled = torch.zeros(rows, dtype=torch.long, device=tokens.device)
    return pooled + 1


def hf_token_lengths(tower: nn.Module, tokens: torch.Tensor) -> torch.Tensor | None:
    """Return, for a Hugging Face tower, the positions up to each text's last non-padding token, (B,), or None.

    None unless the tower is an ``HFTextEncoder`` of an architecture that masks padding, with a mean or
    CLS pooler and a padding id.
    """
    if type(tower) is not HFTextEncoder or type(tower.pooler) not in _PADDING_BLIND_POOLERS:
        return None
    config = tower.config
    pad_id = getattr(config, "pad_token_id", None)
    if getattr(config, "model_type", None) not in _PADDING_MASKED_ARCHITECTURES or pad_id is None:
        return None
    positions = torch.arange(1, tokens.shape[-1] + 1, device=tokens.device)  # (L,)
    return ((tokens != pad_id) * positions).amax(dim=-1).clamp(min=1)  # (B,)


def is_causal_mask(mask: torch.Tensor | None, size: int) -> bool:
    """Whether ``mask`` is an additive (size, size) mask hiding every later position (-inf above the diagonal)."""
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (size, size):
        return False
    later = torch.ones(size, size, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.equal(torch.isneginf(mask), later)) and bool(torch.isfinite(mask[~later]).all())
