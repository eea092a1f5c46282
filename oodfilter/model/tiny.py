"""The tiny test models: seeded random weights, for tests and examples that need no download.

``test-tiny`` has a CLIP text tower; ``test-tiny-hf`` has a Hugging Face (BERT) text tower and needs
``transformers``.
"""

from __future__ import annotations

import torch

from oodfilter.model.build import build_from_open_clip
from oodfilter.model.clipn import CLIPN, ModelSource
from oodfilter.model.registration import TINY_HF_MODEL_NAME, TINY_MODEL_NAME

TINY_SEED = 0


def build_tiny_model(seed: int = TINY_SEED) -> CLIPN:
    """Build ``test-tiny``: seeded random weights everywhere, the no-prompts included.

    The same seed gives bit-identical weights on every machine, so caches keyed by the model's
    fingerprint are shared between runs. The no-prompts get small random values so that the no-branch
    differs from the yes-branch and every score is informative (if meaningless) on this model.
    """
    return _seeded(TINY_MODEL_NAME, seed)


def build_tiny_hf_model(seed: int = TINY_SEED) -> CLIPN:
    """Build ``test-tiny-hf`` like :func:`build_tiny_model`, with a 2-layer BERT as its text tower.

    Raises:
        MissingDependencyError: ``transformers`` is not installed.

    """
    return _seeded(TINY_HF_MODEL_NAME, seed)


def _seeded(name: str, seed: int) -> CLIPN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_from_open_clip(name, source=ModelSource(name=name))
        with torch.no_grad():
            model.no_tower.prompts.normal_(0.0, 0.5)
    model.no_branch_trained = True
    return model
