"""Hugging Face text towers (open_clip's ``HFTextEncoder``): detection, the optional dependency, their files.

``transformers`` stays optional: open_clip tries to import it and builds such a tower only with it; this
module never imports it and only checks that open_clip found it (:func:`require_transformers`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from open_clip import hf_model
from open_clip.hf_model import HFTextEncoder
from torch import nn

from oodfilter.errors import MissingDependencyError

# The file, beside the tokenizer's, that lets a bundle rebuild its Hugging Face text tower by itself.
HF_CONFIG_FILE = "config.json"
_PROBE_TEXT = "A Photo of THE Café, naïve—tiger 123!"


def hf_text_tower(clip: nn.Module) -> HFTextEncoder | None:
    """Return the ``HFTextEncoder`` text tower of an open_clip model, or None for any other tower."""
    tower = getattr(clip, "text", None)
    return tower if isinstance(tower, HFTextEncoder) else None


def has_hf_text_tower(model_config: Mapping[str, Any]) -> bool:
    """Whether an open_clip model config describes a Hugging Face text tower (``text_cfg.hf_model_name``)."""
    text_cfg = model_config.get("text_cfg")
    return isinstance(text_cfg, Mapping) and bool(text_cfg.get("hf_model_name"))


def require_transformers(name: str) -> None:
    """Check that ``transformers`` is installed, which a Hugging Face text tower needs.

    Raises:
        MissingDependencyError: it is not; the message says how to install it.

    """
    if hf_model.transformers is None:  # what open_clip found when it tried to import it
        raise MissingDependencyError(
            f"model '{name}' has a Hugging Face text tower, which needs the transformers package: "
            "pip install transformers"
        )


def hf_tower_settings(tower: HFTextEncoder) -> str:
    """Return the settings besides the weights that decide an HF tower's output: pooling and the padding id."""
    return f"hf|{type(tower.pooler).__name__}|{getattr(tower.config, 'pad_token_id', None)}"


def write_hf_text_files(clip: nn.Module, tokenizer: Any, folder: Path) -> None:
    """Save the HF text tower's config and the tokenizer into ``folder`` (nothing for other towers).

    open_clip reads the tokenizer of a ``local-dir:`` model from that folder, and with the config
    (``config.json``) the tower can be rebuilt without the folder its ``hf_model_name`` names.
    """
    tower = hf_text_tower(clip)
    if tower is None:
        return
    tower.config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def text_cfg_reading(model_config: Mapping[str, Any], folder: Path) -> dict[str, Any] | None:
    """Return the ``text_cfg`` building the HF tower from ``folder``'s config, if the model has one and it is there."""
    if not has_hf_text_tower(model_config) or not (folder / HF_CONFIG_FILE).is_file():
        return None
    return {**model_config["text_cfg"], "hf_model_name": str(folder), "hf_model_pretrained": False}


def hf_tokenizer_digest(tokenizer: Any) -> str:
    """Return a sha256 of what decides an HF tokenizer's ids: its vocabulary and the ids of a probe text.

    The probe (mixed case, accents, punctuation, digits) catches normalisation and special-token
    differences that the vocabulary alone would not show.
    """
    inner = getattr(tokenizer, "tokenizer", None)
    get_vocab = getattr(inner, "get_vocab", None)
    vocabulary = sorted(get_vocab().items()) if callable(get_vocab) else []
    probe = tokenizer([_PROBE_TEXT])
    digest = hashlib.sha256(json.dumps(vocabulary).encode())
    digest.update(probe.to("cpu", torch.int64).numpy().tobytes())
    return digest.hexdigest()
