"""Rescoring: a new class list, method or decision rule for a scanned manifest, from its stored features.

No image is opened and the image encoder never runs: the features ``scan --save-features`` stored are
scored against the new class vectors. The features are refused unless the model's image tower has the
fingerprint they were stored with. The new manifest keeps the source's rows in order (error rows as
they were) and points at the same feature file, so it can be rescored again.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodfilter import __version__
from oodfilter.atomic import atomic_write_text
from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import classes_digest
from oodfilter.device import resolve_device, runnable_precision
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.model.factory import load_model
from oodfilter.real_path import real_path
from oodfilter.scan.config import check_decision_options
from oodfilter.scan.decisions import DecisionPlan, calibration_paths, decide_keep_fraction
from oodfilter.scoring.calibrate import calibrate
from oodfilter.scoring.factory import build_scorer
from oodfilter.scoring.files import score_files
from oodfilter.scoring.scorer import Scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.clip_retrieval import read_clip_retrieval
from oodfilter.sinks.features import (
    FeatureHeader,
    data_path,
    load_features,
    matching_features,
    read_header,
    remove_features,
    share_features,
    write_features,
)
from oodfilter.sinks.lock import ManifestLock
from oodfilter.sinks.manifest import ManifestWriter, manifest_format, read_manifest, read_meta, sidecar
from oodfilter.sinks.row_paths import manifest_base
from oodfilter.sinks.rows import ManifestRow, build_rows
from oodfilter.text.templates import DEFAULT_TEMPLATES, templates_digest

CHUNK = 4096  # features scored per step


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
        device: Where the text encoder and the scoring run.
        cache_dir: Text-vector cache folder.
        overwrite: Replace an existing manifest of ours at ``out``.

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
    device: str = "auto"
    cache_dir: str | None = None
    overwrite: bool = False


@dataclass
class RescoreSummary:
    """The outcome of a rescore: rows written, ok rows scored, OOD decisions, seconds."""

    manifest: Path
    total: int = 0
    ok: int = 0
    ood: int = 0
    seconds: float = 0.0
    method: str = ""


def rescore(config: RescoreConfig, *, model: CLIPN | None = None) -> RescoreSummary:
    """Score a manifest's stored features against a new class list / method / rule; write a new manifest.

    ``model`` is an already loaded model to use instead of loading one (its image tower is still checked).

    Raises:
        InputError: no stored features, features of another image tower, an existing ``out`` without
            ``overwrite`` (or ``out`` being the source), bad options.

    """
    started = time.perf_counter()
    source = Path(config.clip_retrieval or config.manifest)
    out = Path(config.out)
    _check_options(config, source, out)
    if config.clip_retrieval:
        rows, features, header, model = _clip_retrieval_source(config, model)
    else:
        rows = read_manifest(source)
        if not rows:
            raise InputError(f"manifest {source} is missing or has no rows; scan first (with --save-features)")
        header = read_header(source)
        features = load_features(source, [row.path for row in rows if row.ok])
        pretrained = config.pretrained if config.model else header.pretrained  # the stored model, as loaded
        if model is None:
            model = load_model(config.model or header.model, pretrained, device=config.device,
                               cache_dir=config.cache_dir)
        if model.image_fingerprint() != header.image_fingerprint or model.embed_dim != header.dim:
            raise InputError(f"the features of {source} come from another image tower (stored with model "
                             f"'{header.model}'); rescore with that model, or scan again with --save-features")
    # class vectors in the precision the stored features were encoded in, as the scan built its own (fp32
    # where this device cannot run it: fp16 features rescored on a CPU, int8 ones on a GPU)
    device = resolve_device(config.device) if config.device != "auto" else model.device
    precision = runnable_precision(device, header.precision)
    if header.precision is not None and precision != header.precision:
        warnings.warn(f"the features of {source} were encoded in {header.precision}, which {device} cannot run: "
                      f"class vectors in {precision}", stacklevel=2)
    spec = ScorerSpec(model=model.source.name, classes=config.classes, method=config.method,
                      templates=config.templates, threshold=config.threshold, calibration=config.calibration,
                      device=config.device, cache_dir=config.cache_dir, precision=precision)
    scorer = build_scorer(spec, model=model)
    fitted = _calibrate(config, scorer) if config.id_recall is not None else None
    with ManifestLock(out):
        # --overwrite: the replaced manifest's own features and header (never the ones being read)
        remove_features(out, keep=[] if config.clip_retrieval else [data_path(source)])
        sidecar(out, "calibration.json").unlink(missing_ok=True)
        if fitted is not None:
            scorer.threshold = fitted.threshold
            fitted.save(sidecar(out, "calibration.json"))
        _write_side_files(config, scorer, source, out, fitted)
        writer = ManifestWriter(out, append=False)
        kept: list[bool] = []  # per source ok row: still ok (a non-finite score makes an error row)
        try:
            for batch in _rescored(rows, features, scorer, config.keep_fraction is not None, kept):
                writer.write(batch)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        if header.data:  # the new manifest's own feature rows, bound to its ok rows
            _store_features(source, out, header, rows, features, kept)
        if config.keep_fraction is not None:
            meta = read_meta(out)
            meta["keep_boundary"] = decide_keep_fraction(out, config.keep_fraction)
            atomic_write_text(sidecar(out, "meta.json"), json.dumps(meta, indent=2))
    written = read_manifest(out)
    return RescoreSummary(out, len(written), sum(r.ok for r in written), sum(r.is_ood is True for r in written),
                          time.perf_counter() - started, scorer.method.name)


def _clip_retrieval_source(
    config: RescoreConfig, model: CLIPN | None
) -> tuple[list[ManifestRow], np.ndarray, FeatureHeader, CLIPN]:
    """Rows, features and a header for embeddings in clip-retrieval's layout, checked against the model."""
    if not config.model and model is None:
        raise InputError("--clip-retrieval embeddings carry no model: pass --model (and --pretrained) naming the "
                         "model whose image tower computed them")
    ids, features = read_clip_retrieval(config.clip_retrieval or "")
    if model is None:
        model = load_model(str(config.model), config.pretrained, device=config.device, cache_dir=config.cache_dir)
    if features.shape[1] != model.embed_dim:
        raise InputError(f"the embeddings in {config.clip_retrieval} have dimension {features.shape[1]}, model "
                         f"'{model.source.name}' has {model.embed_dim}: they come from another model")
    warnings.warn(f"embeddings from {config.clip_retrieval} carry no fingerprint: only their dimension was checked; "
                  f"they must come from the image tower of '{model.source.name}' for the scores to mean anything",
                  stacklevel=3)
    header = FeatureHeader(model.embed_dim, "", model.source.name, "", config.pretrained)
    return [ManifestRow(path=i, status="ok") for i in ids], features, header, model


def _calibrate(config: RescoreConfig, scorer: Scorer) -> Calibration:
    """Fit ``--id-recall`` on ``--calibrate-on``: a manifest's stored features of this tower, else the images."""
    rescored = real_path(config.clip_retrieval or config.manifest)
    if any(real_path(item) == rescored for item in config.calibrate_on):
        warnings.warn("--calibrate-on includes the manifest being rescored: --id-recall then keeps about that share "
                      "of it whatever it holds; calibrate on images you know are in-distribution", stacklevel=3)
    blocks: list[torch.Tensor] = []  # (n, D) features of the calibration images
    files: list[str] = []
    for item in config.calibrate_on:
        found = matching_features(item, scorer.model.image_fingerprint(), scorer.precision)
        if found is not None:  # stored features of this tower: nothing to encode
            blocks.append(torch.from_numpy(np.asarray(found[1], dtype=np.float32)))
        else:
            files += calibration_paths([item])
    if files:
        for _ in score_files(scorer, files, feature_sink=blocks.append):
            pass
    features = torch.cat(blocks) if blocks else torch.zeros(0, scorer.model.embed_dim)
    return calibrate(scorer, features, config.id_recall or 0.0, source=" ".join(config.calibrate_on))


def _check_options(config: RescoreConfig, source: Path, out: Path) -> None:
    """Refuse bad options before anything is loaded or written."""
    if config.clip_retrieval and config.manifest:
        raise InputError("rescore either a manifest or a --clip-retrieval folder, not both")
    if not config.clip_retrieval and not config.manifest:
        raise InputError("name the manifest to rescore (scanned with --save-features), or --clip-retrieval DIR")
    manifest_format(out)  # a known suffix, before any side file is written
    if config.threshold is not None and not math.isfinite(config.threshold):
        raise InputError("--threshold must be a finite number")
    check_decision_options(config.threshold, config.id_recall, config.calibrate_on, config.calibration,
                           config.keep_fraction)
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


def _rescored(rows: Sequence[ManifestRow], features: np.ndarray, scorer: Scorer,
              undecided: bool, kept: list[bool]) -> Iterator[list[ManifestRow]]:
    """Yield the new rows in the source's order: error rows as they were, ok rows scored from features.

    ``kept`` gets, for every source ok row, whether its new row is still ok.
    """
    position = 0  # next feature row
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        ok = [i for i, row in enumerate(chunk) if row.ok]
        block = torch.from_numpy(np.asarray(features[position : position + len(ok)], dtype=np.float32))  # (n, D)
        position += len(ok)
        errors = [(i, str(row.error)) for i, row in enumerate(chunk) if not row.ok]
        result = scorer.score_features(block) if ok else None
        if result is not None and undecided:
            result.is_ood = None
        built = build_rows([row.path for row in chunk], errors, ok, result)
        kept += [built[i].ok for i in ok]
        yield built


def _store_features(source: Path, out: Path, header: FeatureHeader, rows: Sequence[ManifestRow],
                    features: np.ndarray, kept: list[bool]) -> None:
    """Give ``out`` feature rows of its own: a link to the source's if every ok row stayed ok, else a copy.

    The copy holds the rows that stayed ok (a non-finite score made an error row, which has no feature).
    """
    paths = [row.path for row in rows if row.ok]
    if all(kept):
        share_features(out, data_path(source), header, paths)
        return
    mask = np.array(kept, dtype=bool)
    write_features(out, np.asarray(features)[mask], header, [path for path, ok in zip(paths, kept, strict=True) if ok])


def _write_side_files(config: RescoreConfig, scorer: Scorer, source: Path, out: Path,
                      fitted: Calibration | None = None) -> None:
    """Write the new manifest's meta (paths stay relative to the source scan's folder)."""
    previous = read_meta(source)
    method = scorer.method
    names = list(scorer.class_vectors.class_names)
    rule = {"threshold": config.threshold, "calibration": config.calibration, "id_recall": config.id_recall,
            "keep_fraction": config.keep_fraction}
    plan = DecisionPlan(scorer.threshold, rule, calibration=fitted, keep_fraction=config.keep_fraction)
    base = os.getcwd() if config.clip_retrieval else manifest_base(source, previous)  # what its rows are relative to
    meta: dict[str, Any] = {
        "oodfilter_version": __version__, "cwd": base, "model": scorer.model.source.name,
        "fingerprints": scorer.class_vectors.fingerprints, "method": method.name, **plan.meta(),
        "decision": plan.describe(method.name, method.threshold_free), "classes_sha256": classes_digest(names),
        "num_classes": len(names), "templates": list(scorer.class_vectors.templates),
        "templates_sha256": templates_digest(scorer.class_vectors.templates),
        "rescored_from": str(real_path(source)), "precision": scorer.precision,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sidecar(out, "meta.json"), json.dumps(meta, indent=2))
