"""CLIPN over open_clip: model, loading, bundles and the reference-checkpoint converter."""

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
