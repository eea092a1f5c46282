"""oodfilter: out-of-distribution filtering for image data pipelines, built on CLIPN.

Typical use::

    import oodfilter

    model = oodfilter.load_model("path/to/clipn-bundle")          # or "test-tiny", "ViT-B-16", ...
    classes = oodfilter.read_class_names("classes.txt")
    index = oodfilter.build_text_index(model, classes)
    scorer = oodfilter.Scorer(model, index, method="atd")
    for row in scorer.score_paths(["a.jpg", "b.jpg"]):
        print(row.path, row.status, row.ood_score, row.is_ood, row.top_class)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public names → the module that defines them. Imported on first access (PEP 562), so that
# `import oodfilter` and `oodfilter --help` stay instant and torch loads only when needed.
_EXPORTS = {
    "CLIPN": "oodfilter.model.clipn",
    "CheckpointError": "oodfilter.errors",
    "ClassListError": "oodfilter.errors",
    "ImageDecodeError": "oodfilter.data.decode",
    "ImageScore": "oodfilter.scoring.scorer",
    "InputError": "oodfilter.errors",
    "MissingDependencyError": "oodfilter.errors",
    "ModelLoadError": "oodfilter.errors",
    "ModelMismatchError": "oodfilter.errors",
    "ModelSource": "oodfilter.model.clipn",
    "OODFilterError": "oodfilter.errors",
    "ScoreMethod": "oodfilter.scoring.methods",
    "ScoreResult": "oodfilter.scoring.scorer",
    "Scorer": "oodfilter.scoring.scorer",
    "TINY_MODEL_NAME": "oodfilter.model.registration",
    "TextIndex": "oodfilter.text.index",
    "UnknownNameError": "oodfilter.errors",
    "UnsupportedModelError": "oodfilter.errors",
    "build_text_index": "oodfilter.text.index",
    "clean_class_names": "oodfilter.text.classes",
    "convert_reference_checkpoint": "oodfilter.model.convert",
    "load_bundle": "oodfilter.model.bundle",
    "load_model": "oodfilter.model.factory",
    "load_rgb_image": "oodfilter.data.decode",
    "read_class_names": "oodfilter.text.classes",
    "save_bundle": "oodfilter.model.bundle",
    "scorers": "oodfilter.scoring.methods",
}

if TYPE_CHECKING:
    from oodfilter.data.decode import ImageDecodeError, load_rgb_image
    from oodfilter.errors import (
        CheckpointError,
        ClassListError,
        InputError,
        MissingDependencyError,
        ModelLoadError,
        ModelMismatchError,
        OODFilterError,
        UnknownNameError,
        UnsupportedModelError,
    )
    from oodfilter.model import (
        CLIPN,
        TINY_MODEL_NAME,
        ModelSource,
        convert_reference_checkpoint,
        load_bundle,
        load_model,
        save_bundle,
    )
    from oodfilter.scoring import ImageScore, ScoreMethod, Scorer, ScoreResult, scorers
    from oodfilter.text import TextIndex, build_text_index, clean_class_names, read_class_names


_SUBPACKAGES = ("data", "evaluate", "model", "pipeline", "scan", "scoring", "sinks", "text", "train")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:  # `oodfilter.scan.scan(...)` works without importing the subpackage first
        return importlib.import_module(f"oodfilter.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'oodfilter' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "CLIPN",
    "CheckpointError",
    "ClassListError",
    "ImageDecodeError",
    "ImageScore",
    "InputError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelSource",
    "OODFilterError",
    "ScoreMethod",
    "ScoreResult",
    "Scorer",
    "TINY_MODEL_NAME",
    "TextIndex",
    "UnknownNameError",
    "UnsupportedModelError",
    "__version__",
    "build_text_index",
    "clean_class_names",
    "convert_reference_checkpoint",
    "load_bundle",
    "load_model",
    "load_rgb_image",
    "read_class_names",
    "save_bundle",
    "scorers",
]
