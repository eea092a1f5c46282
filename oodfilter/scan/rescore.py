"""Rescoring: a new class list, method or decision rule for a scanned manifest, from its stored features.

No image is opened and the image encoder never runs: the features ``scan --save-features`` stored are
scored against the new class vectors. The features are refused unless the model's image tower has the
fingerprint they were stored with. The new manifest keeps the source's rows in order (error rows as
they were) and points at the same feature file, so it can be rescored again.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
from oodfilter.scan.adaptive_rescore import adapt_stored, adapted_method, calibrate_adapted, replace_scores
from oodfilter.scan.decision_rule import calibration_paths
from oodfilter.scan.decisions import DecisionPlan, decide_keep_fraction
from oodfilter.scan.rescore_checks import CheckedRescore, check_rescore
from oodfilter.scan.rescore_checks import RescoreConfig as RescoreConfig  # re-exported
from oodfilter.scoring.adaptive import AdaptiveResult
from oodfilter.scoring.calibrate import calibrate
from oodfilter.scoring.factory import build_scorer
from oodfilter.scoring.files import score_files
from oodfilter.scoring.reference import reference_record
from oodfilter.scoring.scorer import Scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.features import (
    FeatureHeader,
    data_path,
    matching_features,
    remove_features,
    share_features,
    write_features,
)
from oodfilter.sinks.lock import ManifestLock
from oodfilter.sinks.manifest import ManifestWriter, read_manifest, read_meta, sidecar
from oodfilter.sinks.row_paths import manifest_base
from oodfilter.sinks.rows import ManifestRow, build_rows
from oodfilter.text.templates import templates_digest

CHUNK = 4096  # features scored per step


@dataclass
class RescoreSummary:
    """The outcome of a rescore: rows written, ok rows scored, OOD and in-distribution decisions, seconds."""

    manifest: Path
    total: int = 0
    ok: int = 0
    ood: int = 0
    seconds: float = 0.0
    method: str = ""
    in_distribution: int = 0

    @property
    def undecided(self) -> int:
        """Ok rows without a decision (a method with no threshold-free rule, and no threshold given)."""
        return self.ok - self.ood - self.in_distribution


def rescore(config: RescoreConfig, *, model: CLIPN | None = None,
            checked: CheckedRescore | None = None) -> RescoreSummary:
    """Score a manifest's stored features against a new class list / method / rule; write a new manifest.

    ``model`` is an already loaded model to use instead of loading one (its image tower is still checked).
    Every check that needs no model runs first (:func:`~oodfilter.scan.rescore_checks.check_rescore`; pass
    its result as ``checked`` when the caller ran it, as the CLI does before importing torch).

    Raises:
        InputError: no stored features, features of another image tower, an existing ``out`` without
            ``overwrite`` (or ``out`` being the source), bad options.

    """
    started = time.perf_counter()
    if checked is None:
        checked = check_rescore(config, model_given=model is not None)
    source = Path(config.clip_retrieval or config.manifest)
    out = Path(config.out)
    rows, features = checked.rows, checked.features
    if checked.header is None:
        header, model = _clip_retrieval_model(config, model, features)
    else:
        header = checked.header
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
    spec = ScorerSpec(model=model.source.name, classes=checked.class_names, method=config.method,
                      templates=config.templates, threshold=config.threshold, calibration=config.calibration,
                      device=config.device, cache_dir=config.cache_dir, precision=precision,
                      reference=tuple(config.reference))
    _warn_reference_is_source(config)
    scorer = build_scorer(spec, model=model)
    adapted = adapt_stored(scorer, features, config.adapt) if config.adapt is not None else None
    fitted = _calibrate(config, scorer, adapted) if config.id_recall is not None else None
    with ManifestLock(out):
        # --overwrite: the replaced manifest's own features and header (never the ones being read)
        remove_features(out, keep=[] if config.clip_retrieval else [data_path(source)])
        sidecar(out, "calibration.json").unlink(missing_ok=True)
        if fitted is not None:
            scorer.threshold = fitted.threshold
            fitted.save(sidecar(out, "calibration.json"))
        _write_side_files(config, scorer, source, out, fitted, adapted)
        writer = ManifestWriter(out, append=False)
        kept: list[bool] = []  # per source ok row: still ok (a non-finite score makes an error row)
        try:
            for batch in _rescored(rows, features, scorer, config.keep_fraction is not None, kept, adapted):
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
                          time.perf_counter() - started, scorer.method.name,
                          in_distribution=sum(r.ok and r.is_ood is False for r in written))


def _clip_retrieval_model(config: RescoreConfig, model: CLIPN | None,
                          features: np.ndarray) -> tuple[FeatureHeader, CLIPN]:
    """Return a header for clip-retrieval embeddings and their model (loaded unless given), checked by dimension."""
    if model is None:
        model = load_model(str(config.model), config.pretrained, device=config.device, cache_dir=config.cache_dir)
    if features.shape[1] != model.embed_dim:
        raise InputError(f"the embeddings in {config.clip_retrieval} have dimension {features.shape[1]}, model "
                         f"'{model.source.name}' has {model.embed_dim}: they come from another model")
    warnings.warn(f"embeddings from {config.clip_retrieval} carry no fingerprint: only their dimension was checked; "
                  f"they must come from the image tower of '{model.source.name}' for the scores to mean anything",
                  stacklevel=3)
    return FeatureHeader(model.embed_dim, "", model.source.name, "", config.pretrained), model


def _warn_reference_is_source(config: RescoreConfig) -> None:
    """Warn when ``--reference`` names the manifest being rescored: its OOD images then count as known ID."""
    rescored = real_path(config.clip_retrieval or config.manifest)
    if any(real_path(item) == rescored for item in config.reference):
        warnings.warn("--reference includes the manifest being rescored: the fitted method then treats its OOD images "
                      "as in-distribution too; fit on images you know are in-distribution", stacklevel=3)


def _calibrate(config: RescoreConfig, scorer: Scorer, adapted: AdaptiveResult | None = None) -> Calibration:
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
    if adapted is not None:  # scored against the scan's proxies, as its rows are
        return calibrate_adapted(scorer, adapted, features, config.id_recall or 0.0, " ".join(config.calibrate_on))
    return calibrate(scorer, features, config.id_recall or 0.0, source=" ".join(config.calibrate_on))


def _rescored(rows: Sequence[ManifestRow], features: np.ndarray, scorer: Scorer,
              undecided: bool, kept: list[bool], adapted: AdaptiveResult | None = None) -> Iterator[list[ManifestRow]]:
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
        if result is not None and adapted is not None:
            result = replace_scores(result, adapted, position - len(ok), scorer.threshold)
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
                      fitted: Calibration | None = None, adapted: AdaptiveResult | None = None) -> None:
    """Write the new manifest's meta (paths stay relative to the source scan's folder)."""
    previous = read_meta(source)
    method = scorer.method
    name = adapted_method(method.name) if adapted is not None else method.name  # adapted scores have no own rule
    names = list(scorer.class_vectors.class_names)
    rule = {"threshold": config.threshold, "calibration": config.calibration, "id_recall": config.id_recall,
            "keep_fraction": config.keep_fraction}
    plan = DecisionPlan(scorer.threshold, rule, calibration=fitted, keep_fraction=config.keep_fraction)
    base = os.getcwd() if config.clip_retrieval else manifest_base(source, previous)  # what its rows are relative to
    meta: dict[str, Any] = {
        "oodfilter_version": __version__, "cwd": base, "model": scorer.model.source.name,
        "fingerprints": scorer.class_vectors.fingerprints, "method": method.name, **plan.meta(),
        "decision": plan.describe(name, method.threshold_free and adapted is None),
        "classes_sha256": classes_digest(names),
        "num_classes": len(names), "templates": list(scorer.class_vectors.templates),
        "templates_sha256": templates_digest(scorer.class_vectors.templates),
        "rescored_from": str(real_path(source)), "precision": scorer.precision,
        "reference": reference_record(scorer),
        "reference_sha256": scorer.reference.sha256 if scorer.reference is not None else None,
    }
    if adapted is not None:
        meta["adapt"] = adapted.meta
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sidecar(out, "meta.json"), json.dumps(meta, indent=2))
