"""Model names that mean something to oodfilter itself, importable without torch or open_clip.

The checks that run before a model loads (``oodfilter scan`` refusing a method the model cannot run)
read them, and they must stay fast.
"""

from __future__ import annotations

TINY_MODEL_NAME = "test-tiny"
TINY_HF_MODEL_NAME = "test-tiny-hf"
HUB_PREFIX = "hf-hub:"  # hf-hub:ORG/REPO[@REVISION], see oodfilter.model.hub
