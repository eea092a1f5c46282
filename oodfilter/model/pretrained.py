"""Which pretrained weights an open_clip model name gets when the caller names none (or ``random``)."""

from __future__ import annotations

import open_clip

from oodfilter.errors import ModelLoadError
from oodfilter.model.registration import register_model_configs

RANDOM_WEIGHTS = "random"
# The weights CLIPN was trained on (docs/method.md §1), used when an open_clip name comes without a tag.
DEFAULT_PRETRAINED = {"ViT-B-16": "laion2b_s34b_b88k", "ViT-B-32": "laion2b_s34b_b79k"}


def resolve_pretrained(name: str, pretrained: str | None) -> str | None:
    """Return the pretrained tag or file to pass to open_clip for ``name`` (None: random weights).

    Args:
        name: open_clip model name or ``hf-hub:`` / ``local-dir:`` identifier.
        pretrained: What the caller asked for: a tag, a file, ``random`` or None (CLIPN's default tag).

    Raises:
        ModelLoadError: ``name`` has no default tag and the caller named none.

    """
    register_model_configs()
    if name.startswith(("hf-hub:", "local-dir:")) or name not in open_clip.list_models():
        return None if pretrained == RANDOM_WEIGHTS else pretrained  # unknown names fail later, clearly
    if pretrained == RANDOM_WEIGHTS:
        return None
    if pretrained is None:
        if name in DEFAULT_PRETRAINED:
            return DEFAULT_PRETRAINED[name]
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none known"
        raise ModelLoadError(
            f"model '{name}' needs pretrained weights: pass a tag ({tags}), a weights file, "
            f"or '{RANDOM_WEIGHTS}' for random weights"
        )
    return pretrained
