"""CLIPN over open_clip: model, loading, bundles and the reference-checkpoint converter.

The names below are imported on first access (see :mod:`oodfilter.lazy`), so that the torch-free
modules of this package (the catalogue, bundle manifests, trust) load without torch and open_clip:
``oodfilter models`` lists the catalogue in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oodfilter.lazy import lazy_attribute, lazy_dir

_EXPORTS = {
    "CLIPN": "oodfilter.model.clipn",
    "HFNoTextTower": "oodfilter.model.no_tower_hf",
    "ModelSource": "oodfilter.model.clipn",
    "NoTextTower": "oodfilter.model.no_tower",
    "PromptedNoTower": "oodfilter.model.no_prompts",
    "TINY_HF_MODEL_NAME": "oodfilter.model.registration",
    "TINY_MODEL_NAME": "oodfilter.model.registration",
    "build_from_open_clip": "oodfilter.model.build",
    "build_tiny_hf_model": "oodfilter.model.tiny",
    "build_tiny_model": "oodfilter.model.tiny",
    "convert_reference_checkpoint": "oodfilter.model.convert",
    "load_bundle": "oodfilter.model.bundle",
    "load_model": "oodfilter.model.factory",
    "load_reference_checkpoint": "oodfilter.model.convert",
    "save_bundle": "oodfilter.model.bundle",
}

if TYPE_CHECKING:
    from oodfilter.model.build import build_from_open_clip
    from oodfilter.model.bundle import load_bundle, save_bundle
    from oodfilter.model.clipn import CLIPN, ModelSource
    from oodfilter.model.convert import convert_reference_checkpoint, load_reference_checkpoint
    from oodfilter.model.factory import load_model
    from oodfilter.model.no_prompts import PromptedNoTower
    from oodfilter.model.no_tower import NoTextTower
    from oodfilter.model.no_tower_hf import HFNoTextTower
    from oodfilter.model.registration import TINY_HF_MODEL_NAME, TINY_MODEL_NAME
    from oodfilter.model.tiny import build_tiny_hf_model, build_tiny_model


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _EXPORTS, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _EXPORTS)


__all__ = [
    "CLIPN",
    "HFNoTextTower",
    "ModelSource",
    "NoTextTower",
    "PromptedNoTower",
    "TINY_HF_MODEL_NAME",
    "TINY_MODEL_NAME",
    "build_from_open_clip",
    "build_tiny_hf_model",
    "build_tiny_model",
    "convert_reference_checkpoint",
    "load_bundle",
    "load_model",
    "load_reference_checkpoint",
    "save_bundle",
]
