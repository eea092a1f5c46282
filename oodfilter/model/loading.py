"""Building CLIPN models from open_clip names, pretrained tags, local files and bundles."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch

from oodfilter.device import resolve_device
from oodfilter.errors import ModelLoadError
from oodfilter.model.clipn import CLIPN, ModelSource
from oodfilter.model.no_tower import DEFAULT_NUM_PROMPTS
from oodfilter.model.registration import TINY_MODEL_NAME, register_model_configs

logger = logging.getLogger(__name__)

BUNDLE_MANIFEST = "oodfilter.json"
RANDOM_WEIGHTS = "random"
# The weights CLIPN was trained on (METHOD.md §1), used when an open_clip name comes without a tag.
DEFAULT_PRETRAINED = {"ViT-B-16": "laion2b_s34b_b88k", "ViT-B-32": "laion2b_s34b_b79k"}
_TINY_SEED = 0


def load_model(
    model: str | Path = "ViT-B-16",
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = "auto",
    verify: bool = True,
) -> CLIPN:
    """Load a CLIPN model, ready for inference (eval mode, on ``device``).

    ``model`` may be:

    * a bundle folder written by :func:`oodfilter.save_bundle`, ``oodfilter finetune`` or
      ``oodfilter convert-clipn`` (trained no-branch included);
    * a reference CLIPN release checkpoint (``.pt``), converted on the fly (architecture ViT-B-16,
      or the one named by ``pretrained``);
    * an open_clip model name (``ViT-B-16``) with ``pretrained`` a tag (``laion2b_s34b_b88k``,
      downloaded from the model hub), a local weights file, or ``"random"`` for random weights
      (benchmarks); without ``pretrained``, ViT-B-16 and ViT-B-32 get CLIPN's LAION-2B tags. The
      no-branch starts as an untrained copy of the text tower;
    * an ``hf-hub:org/repo`` or ``local-dir:/path`` open_clip identifier;
    * ``test-tiny``: a tiny model with seeded random weights (no-branch included) for tests.

    Args:
        model: What to load (see above).
        pretrained: Pretrained tag or weights file for an open_clip name.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or a ``torch.device``.
        verify: Check bundle file hashes against the bundle's manifest.

    Raises:
        ModelLoadError: the name, tag or file cannot be resolved or loaded; the message says why.

    """
    target = resolve_device(device)
    path = Path(model)
    if path.is_dir() and (path / BUNDLE_MANIFEST).is_file():
        from oodfilter.model.bundle import load_bundle

        loaded = load_bundle(path, verify=verify)
    elif path.is_file():
        from oodfilter.model.convert import load_reference_checkpoint

        loaded = load_reference_checkpoint(path, architecture=pretrained or "ViT-B-16")
    elif str(model) == TINY_MODEL_NAME:
        loaded = build_tiny_model()
    else:
        loaded = build_from_open_clip(str(model), _resolve_pretrained(str(model), pretrained))
    return loaded.to(target).eval()


def build_from_open_clip(
    name: str,
    pretrained: str | None = None,
    *,
    num_prompts: int = DEFAULT_NUM_PROMPTS,
    source: ModelSource | None = None,
) -> CLIPN:
    """Create an open_clip model (``name`` + ``pretrained``) and wrap it as a CLIPN with a fresh no-tower.

    Raises:
        ModelLoadError: open_clip cannot build or load the model.

    """
    register_model_configs()
    model_config = _model_config(name)
    try:
        with _quiet_random_init_warning():
            clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as error:
        raise ModelLoadError(_explain_open_clip_failure(name, pretrained, error)) from error
    return CLIPN(
        clip,
        tokenizer,
        model_config=model_config,
        preprocess=preprocess,
        source=source or ModelSource(name=name, pretrained=pretrained),
        num_prompts=num_prompts,
    )


def _resolve_pretrained(name: str, pretrained: str | None) -> str | None:
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


def build_tiny_model(seed: int = _TINY_SEED) -> CLIPN:
    """Build ``test-tiny``: seeded random weights everywhere, the no-prompts included.

    The same seed gives bit-identical weights on every machine, so caches keyed by the model's
    fingerprint are shared between runs. The no-prompts get small random values so that the no-branch
    differs from the yes-branch and every score is informative (if meaningless) on this model.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_from_open_clip(TINY_MODEL_NAME, source=ModelSource(name=TINY_MODEL_NAME))
        with torch.no_grad():
            model.no_tower.prompts.normal_(0.0, 0.5)
    model.no_branch_trained = True
    return model


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """Drop open_clip's root-logger warning about random weights: callers here ask for them knowingly."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _model_config(name: str) -> dict[str, Any]:
    try:
        config = open_clip.get_model_config(name)
    except Exception as error:  # hf-hub configs need the network
        raise ModelLoadError(_explain_open_clip_failure(name, None, error)) from error
    if config is None:
        raise ModelLoadError(
            f"unknown model '{name}': not an open_clip model name, bundle folder or checkpoint file. "
            f"Known names include {', '.join(sorted(open_clip.list_models())[:8])}, ... "
            f"(see open_clip.list_models()) and '{TINY_MODEL_NAME}'."
        )
    return copy.deepcopy(config)


def _explain_open_clip_failure(name: str, pretrained: str | None, error: Exception) -> str:
    what = f"'{name}'" + (f" with pretrained '{pretrained}'" if pretrained else "")
    hint = (
        "If this machine is offline, pass a local weights file as pretrained, a bundle folder, or "
        "'local-dir:/path' holding open_clip_config.json and weights."
    )
    if pretrained and pretrained not in open_clip.list_pretrained_tags_by_model(name) and not Path(
        pretrained
    ).is_file():
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        hint = f"'{pretrained}' is neither a known tag for {name} (known: {tags}) nor an existing file."
    return f"cannot load model {what}: {error}. {hint}"
