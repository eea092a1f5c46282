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

__version__ = "0.1.0"

__all__ = [
    "CLIPN",
    "TINY_MODEL_NAME",
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
