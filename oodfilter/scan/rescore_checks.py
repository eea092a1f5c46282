"""What ``rescore`` takes and everything it checks before the model loads: options, source, class list, method.

:func:`check_rescore` runs every check that needs no model and no scores and reads the source (the
manifest's rows, its feature header and features, or clip-retrieval embeddings), so that a bad option, a
missing class list or calibration file, or a source without stored features fails at once, never after
a model load and the encoding of the class vectors. It imports nothing heavy (no torch, open_clip or
FAISS): the CLI runs it before it imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oodfilter.errors import InputError
from oodfilter.real_path import real_path
from oodfilter.scan.config import check_decision_options
from oodfilter.scan.decision_rule import calibration_paths
from oodfilter.scoring.checks import check_method_fits_model, check_spec
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.clip_retrieval import read_clip_retrieval
from oodfilter.sinks.features import FeatureHeader, header_path, load_features, read_header
from oodfilter.sinks.manifest import manifest_format, read_manifest, sidecar
from oodfilter.sinks.rows import ManifestRow
from oodfilter.text.classes import ClassList
from oodfilter.text.templates import DEFAULT_TEMPLATES

if TYPE_CHECKING:
    from oodfilter.scoring.adapt_config import AdaptConfig


@dataclass
class RescoreConfig:
    """What to rescore with; see ``oodfilter rescore --help``.

    Attributes:
        manifest: A manifest scanned with ``--save-features`` (or rescored from one).
        clip_retrieval: Instead of ``manifest``: a folder of embeddings in clip-retrieval's layout (needs
            ``model``; only the dimension can be checked against it).
        classes: The new class-list file, or the names.
        out: The new manifest.
        model: The model; default the one the features were stored with (its image tower must match).
        pretrained: Pretrained tag or weights file for an open_clip name.
        method, templates, threshold, calibration, keep_fraction: As for ``scan``.
        id_recall, calibrate_on: Fit a threshold keeping this share of known-ID images, as for ``scan``; a
            ``calibrate_on`` manifest with stored features of the same image tower is read, not re-encoded.
        reference: Known in-distribution images the fitted methods (knn, mahalanobis) fit on, as for
            ``scan``; a manifest with stored features of the same image tower is read, not re-encoded.
        device: Where the text encoder and the scoring run.
        cache_dir: Text-vector cache folder.
        overwrite: Replace an existing manifest of ours at ``out``.
        adapt: Run the dataset-aware pass (:func:`oodfilter.scoring.adaptive.adaptive_scores`) with these
            settings and write its scores; None: the method's scores.

    """

    manifest: str = ""
    clip_retrieval: str | None = None
    classes: str | list[str] = ""
    out: str = "oodfilter-rescore.jsonl"
    model: str | None = None
    pretrained: str | None = None
    method: str | None = None
    templates: str | list[str] = DEFAULT_TEMPLATES
    threshold: float | None = None
    calibration: str | None = None
    id_recall: float | None = None
    calibrate_on: list[str] = field(default_factory=list)
    keep_fraction: float | None = None
    reference: list[str] = field(default_factory=list)
    device: str = "auto"
    cache_dir: str | None = None
    overwrite: bool = False
    adapt: AdaptConfig | None = None


@dataclass(frozen=True)
class CheckedRescore:
    """What :func:`check_rescore` read.

    Attributes:
        class_names: The new class list.
        rows: The source's rows (for clip-retrieval input, one ok row per embedding).
        features: (N_ok, D) stored features, one row per ok row.
        header: The source's feature header (None for clip-retrieval input: it carries none).

    """

    class_names: ClassList
    rows: list[ManifestRow]
    features: np.ndarray
    header: FeatureHeader | None


def check_rescore(config: RescoreConfig, *, model_given: bool = False) -> CheckedRescore:
    """Check everything about a rescore that needs no model and no scores, and read its source.

    Args:
        config: What to rescore with.
        model_given: The caller brings a loaded model, so no model name tells what the method needs.

    Raises:
        InputError: bad or contradicting options, an output that would replace something (or the
            source), a source without rows or stored features, clip-retrieval input without a model, an
            unreadable calibration file, ``--calibrate-on`` or ``--reference`` without images, a fitted
            method without ``--reference``, or a method the model (named, or stored with the features)
            cannot run.
        ClassListError: the class list cannot be read.
        UnknownNameError: an unknown method or template set.

    """
    source = Path(config.clip_retrieval or config.manifest)
    out = Path(config.out)
    check_options(config, source, out)
    spec = ScorerSpec(model=config.model or "", classes=config.classes, method=config.method,
                      templates=config.templates, threshold=config.threshold, calibration=config.calibration,
                      reference=tuple(config.reference))
    class_names = check_spec(spec, model_known=True).class_names or ClassList()
    for item in config.calibrate_on:
        if not header_path(item).is_file():  # stored features are matched to the model once it is loaded
            calibration_paths([item])  # refuses an item without images
    header: FeatureHeader | None = None
    if config.clip_retrieval:
        if not config.model and not model_given:
            raise InputError("--clip-retrieval embeddings carry no model: pass --model (and --pretrained) naming "
                             "the model whose image tower computed them")
        ids, features = read_clip_retrieval(config.clip_retrieval)
        rows = [ManifestRow(path=i, status="ok") for i in ids]
    else:
        rows = read_manifest(source)
        if not rows:
            raise InputError(f"manifest {source} is missing or has no rows; scan first (with --save-features)")
        header = read_header(source)
        features = load_features(source, [row.path for row in rows if row.ok])
    if config.adapt is not None and len(features) < config.adapt.min_images:
        raise InputError(f"--adapt learns from the scan itself and needs at least {config.adapt.min_images} scored "
                         f"images; {source} has {len(features)}: rescore it without --adapt")
    model = config.model or (header.model if header is not None else None)
    if model and not model_given:  # the method against the model's name: before any download
        check_method_fits_model(ScorerSpec(model=model, method=config.method))
    return CheckedRescore(class_names, rows, features, header)


def check_options(config: RescoreConfig, source: Path, out: Path) -> None:
    """Refuse bad options and outputs before anything is read, loaded or written.

    Raises:
        InputError: see :func:`check_rescore`.

    """
    if config.clip_retrieval and config.manifest:
        raise InputError("rescore either a manifest or a --clip-retrieval folder, not both")
    if not config.clip_retrieval and not config.manifest:
        raise InputError("name the manifest to rescore (scanned with --save-features), or --clip-retrieval DIR")
    manifest_format(out)  # a known suffix, before any side file is written
    if config.threshold is not None and not math.isfinite(config.threshold):
        raise InputError("--threshold must be a finite number")
    check_decision_options(config.threshold, config.id_recall, config.calibrate_on, config.calibration,
                           config.keep_fraction)
    if config.adapt is not None and config.calibration:
        raise InputError("--calibration was fitted on the method's own scores, not on the scores --adapt writes: "
                         "decide with --id-recall and --calibrate-on (fitted on adapted scores), --threshold or "
                         "--keep-fraction")
    sides = [sidecar(out, name) for name in ("meta.json", "features.json", "calibration.json")]
    if not config.overwrite and not out.exists() and any(side.exists() for side in sides):
        raise InputError(f"side files of {out} already exist (e.g. {next(x for x in sides if x.exists()).name}): pass "
                         "--overwrite to replace them, or --out another file")
    if not config.classes:
        raise InputError("no class list: pass --classes FILE (one in-distribution class per line)")
    if real_path(out) == real_path(source):
        raise InputError(f"--out {out} is the manifest being rescored; choose another file")
    if out.exists() and not config.overwrite:
        raise InputError(f"manifest {out} already exists: pass --overwrite to replace it, or --out another file")
    if out.exists() and not sidecar(out, "meta.json").is_file():
        raise InputError(f"--overwrite replaces only an oodfilter manifest, and {out} is not one; choose another --out")
