"""Building a CLIPN from an open_clip model name: the one place that calls open_clip's factory."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip

from oodfilter.errors import ModelLoadError
from oodfilter.model.clipn import CLIPN, ModelSource
from oodfilter.model.hf_text import has_hf_text_tower, require_transformers, text_cfg_reading
from oodfilter.model.no_prompts import DEFAULT_NUM_PROMPTS
from oodfilter.model.registration import TINY_MODEL_NAME, register_model_configs


def build_from_open_clip(
    name: str,
    pretrained: str | None = None,
    *,
    num_prompts: int = DEFAULT_NUM_PROMPTS,
    source: ModelSource | None = None,
    hf_text_dir: Path | None = None,
) -> CLIPN:
    """Create an open_clip model (``name`` + ``pretrained``) and wrap it as a CLIPN with a fresh no-tower.

    Args:
        name: open_clip model name, ``hf-hub:org/repo`` or ``local-dir:/path`` identifier.
        pretrained: Pretrained tag or weights file; None for random weights.
        num_prompts: Number of learnable no-prompts of the new no-tower.
        source: Provenance to record; by default the open_clip name and tag.
        hf_text_dir: A folder holding the Hugging Face text tower's ``config.json`` (a bundle's
            yes-model), to build that tower from instead of the folder or hub id its config names.

    Raises:
        ModelLoadError: open_clip cannot build or load the model.
        MissingDependencyError: the model has a Hugging Face text tower and ``transformers`` is missing.

    """
    register_model_configs()
    model_config = _model_config(name)
    overrides = _hf_text_overrides(name, model_config, hf_text_dir)
    try:
        with _quiet_random_init_warning():
            # pretrained_text=False: a Hugging Face text tower gets the CLIP weights, or random ones when
            # there are none (never a download of the text model's own weights).
            clip, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, pretrained_text=False, **overrides
            )
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


def _hf_text_overrides(name: str, model_config: dict[str, Any], hf_text_dir: Path | None) -> dict[str, Any]:
    """open_clip model arguments for a Hugging Face text tower (none for other towers)."""
    if not has_hf_text_tower(model_config):
        return {}
    require_transformers(name)
    text_cfg = text_cfg_reading(model_config, hf_text_dir) if hf_text_dir is not None else None
    return {} if text_cfg is None else {"text_cfg": text_cfg}


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
