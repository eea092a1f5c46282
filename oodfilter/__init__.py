"""oodfilter: out-of-distribution filtering for image data pipelines, built on CLIPN.

Typical use::

    import oodfilter

    scorer = oodfilter.build_scorer(oodfilter.ScorerSpec(model="path/to/clipn-bundle", classes="classes.txt"))
    for rows in oodfilter.score_files(scorer, ["a.jpg", "b.jpg"]):
        for row in rows:
            print(row.path, row.status, row.ood_score, row.is_ood, row.top_class)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from oodfilter.deprecation import warn_deprecated

# Public names → the module that defines them. Imported on first access (PEP 562), so that
# `import oodfilter` and `oodfilter --help` stay instant and torch loads only when needed.
_EXPORTS = {
    "ApplySummary": "oodfilter.scan.apply",
    "CLIPN": "oodfilter.model.clipn",
    "Calibration": "oodfilter.decision.calibration",
    "CheckpointError": "oodfilter.errors",
    "ClassListError": "oodfilter.errors",
    "ImageDecodeError": "oodfilter.data.decode",
    "ClassVectors": "oodfilter.text.class_vectors",
    "ManifestRow": "oodfilter.sinks.rows",
    "InputError": "oodfilter.errors",
    "MissingDependencyError": "oodfilter.errors",
    "ModelDownloadError": "oodfilter.errors",
    "ModelLoadError": "oodfilter.errors",
    "ModelMismatchError": "oodfilter.errors",
    "ModelSource": "oodfilter.model.clipn",
    "OODFilterError": "oodfilter.errors",
    "ScoreMethod": "oodfilter.scoring.methods",
    "ScoreResult": "oodfilter.scoring.scorer",
    "Scorer": "oodfilter.scoring.scorer",
    "ScorerSpec": "oodfilter.scoring.spec",
    "TINY_MODEL_NAME": "oodfilter.model.registration",
    "apply_manifest": "oodfilter.scan.apply",
    "UnknownNameError": "oodfilter.errors",
    "UnsupportedModelError": "oodfilter.errors",
    "build_class_vectors": "oodfilter.text.class_vectors",
    "build_scorer": "oodfilter.scoring.factory",
    "calibrate": "oodfilter.scoring.calibrate",
    "clean_class_names": "oodfilter.text.classes",
    "convert_reference_checkpoint": "oodfilter.model.convert",
    "load_bundle": "oodfilter.model.bundle",
    "load_model": "oodfilter.model.factory",
    "load_rgb_image": "oodfilter.data.decode",
    "read_class_names": "oodfilter.text.classes",
    "read_manifest": "oodfilter.sinks.manifest_frame",
    "save_bundle": "oodfilter.model.bundle",
    "score_files": "oodfilter.scoring.files",
    "score_methods": "oodfilter.scoring.methods",
}

# Old public names → (new name, module), kept for one release; each use warns.
_DEPRECATED = {
    "ImageScore": ("ManifestRow", "oodfilter.sinks.rows"),
    "TextIndex": ("ClassVectors", "oodfilter.text.class_vectors"),
    "build_text_index": ("build_class_vectors", "oodfilter.text.class_vectors"),
    "scorers": ("score_methods", "oodfilter.scoring.methods"),
}

if TYPE_CHECKING:
    from oodfilter.data.decode import ImageDecodeError, load_rgb_image
    from oodfilter.decision.calibration import Calibration
    from oodfilter.errors import (
        CheckpointError,
        ClassListError,
        InputError,
        MissingDependencyError,
        ModelDownloadError,
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
    from oodfilter.scan.apply import ApplySummary, apply_manifest
    from oodfilter.scoring import (
        ScoreMethod,
        Scorer,
        ScoreResult,
        ScorerSpec,
        build_scorer,
        score_files,
        score_methods,
    )
    from oodfilter.scoring.calibrate import calibrate
    from oodfilter.sinks.manifest_frame import read_manifest
    from oodfilter.sinks.rows import ManifestRow
    from oodfilter.text import ClassVectors, build_class_vectors, clean_class_names, read_class_names


_SUBPACKAGES = ("data", "decision", "engines", "evaluate", "model", "pipeline", "report", "scan", "scoring",
                "sinks", "text", "train")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:  # `oodfilter.scan.scan(...)` works without importing the subpackage first
        return importlib.import_module(f"oodfilter.{name}")
    if name in _DEPRECATED:
        new, where = _DEPRECATED[name]
        warn_deprecated(f"oodfilter.{name}", f"oodfilter.{new}")
        return getattr(importlib.import_module(where), new)
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
    "ApplySummary",
    "CLIPN",
    "Calibration",
    "CheckpointError",
    "ClassListError",
    "ClassVectors",
    "ImageDecodeError",
    "InputError",
    "ManifestRow",
    "MissingDependencyError",
    "ModelDownloadError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelSource",
    "OODFilterError",
    "ScoreMethod",
    "ScoreResult",
    "Scorer",
    "ScorerSpec",
    "TINY_MODEL_NAME",
    "UnknownNameError",
    "UnsupportedModelError",
    "__version__",
    "apply_manifest",
    "build_class_vectors",
    "build_scorer",
    "calibrate",
    "clean_class_names",
    "convert_reference_checkpoint",
    "load_bundle",
    "load_model",
    "load_rgb_image",
    "read_class_names",
    "read_manifest",
    "save_bundle",
    "score_files",
    "score_methods",
]
