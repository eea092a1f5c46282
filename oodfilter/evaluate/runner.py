"""``oodfilter eval``: several score methods on one pass of image features, ID vs OOD sets."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodfilter.atomic import atomic_write_text
from oodfilter.data.loader import encode_image_files
from oodfilter.errors import OODFilterError
from oodfilter.evaluate import metrics
from oodfilter.evaluate.checks import CheckedEval, attack_config, check_eval, eval_spec, histogram_path
from oodfilter.evaluate.checks import read_image_set as read_image_set  # re-exported
from oodfilter.evaluate.checks import read_labels as read_labels  # re-exported
from oodfilter.evaluate.config import EvalConfig, load_eval_config  # noqa: F401 (load_eval_config re-exported)
from oodfilter.evaluate.histogram import save_histogram_png
from oodfilter.model.clipn import CLIPN
from oodfilter.real_path import real_path
from oodfilter.scoring.factory import build_scorer, load_spec_model
from oodfilter.scoring.methods import PrerequisiteContext, ScoreMethod, score_methods
from oodfilter.scoring.reference import load_reference
from oodfilter.scoring.scorer import Scorer, check_method_runs_on
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.features import header_path, matching_features
from oodfilter.sinks.manifest import FORMATS, read_manifest
from oodfilter.sinks.row_paths import manifest_base, resolve_row_path, resolved_paths
from oodfilter.text.class_vectors import build_class_vectors

logger = logging.getLogger(__name__)

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")


@dataclass
class EvalReport:
    """Results: ``results[method][set]`` = metric → value (set ``average`` included)."""

    methods: list[str]
    sets: list[str]
    results: dict[str, dict[str, dict[str, float]]]
    scores: dict[str, dict[str, list[float]]]
    id_accuracy: float | None
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    fpr_convention: str = "clipn"
    robustness: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``results.json``."""
        return dataclasses.asdict(self)


def _is_manifest(source: str) -> bool:
    return Path(source).is_file() and Path(source).suffix.lower() in FORMATS


def evaluate(
    config: EvalConfig, *, model: CLIPN | None = None, method_objects: dict[str, ScoreMethod] | None = None,
    checked: CheckedEval | None = None,
) -> EvalReport:
    """Score ID and OOD image sets with every requested method from one pass of image features.

    ``method_objects`` supplies configured instances for some method names (e.g. a NegLabel with its own
    vocabulary); other names are created from the registry with their defaults. Every check that needs no
    model runs first (:func:`~oodfilter.evaluate.checks.check_eval`; pass its result as ``checked`` when
    the caller ran it), and every method's prerequisites are checked once the model is loaded, before any
    text or image is encoded.

    Raises:
        InputError: missing sets or classes, an unknown method, or a requested method that cannot run.
    """
    given = {name.lower(): method for name, method in (method_objects or {}).items()}
    if checked is None:
        checked = check_eval(config, method_names=given, model_given=model is not None)
    set_names = checked.set_names
    requested = [m.lower() for m in config.methods] or score_methods.list()
    methods = {name: given.get(name) or score_methods.create(name) for name in requested}
    clipn = model if model is not None else load_spec_model(_spec(config))
    skipped = _unready(config, clipn, methods, checked)  # before any text or image is encoded
    base = _feature_scorer(config, clipn, [m for name, m in methods.items() if name not in skipped],
                           checked.class_names)
    sources = {"id": config.id, **dict(zip(set_names, config.ood, strict=True))}
    features, paths, errors = _encode_sets(config, base, sources, checked.images)
    if any(real_path(item) == real_path(config.id) for item in config.reference):
        logger.warning("--reference is the --id set: the fitted methods then score the ID images against themselves "
                       "(kNN distance 0), which overstates them; fit on other ID images")
    reference = load_reference(config.reference, base, workers=config.workers) if config.reference else None
    report = EvalReport(methods=[], sets=set_names, results={}, scores={}, id_accuracy=None, errors=errors,
                        fpr_convention=config.fpr_convention, skipped=skipped,
                        reference=reference.meta() if reference is not None else None)
    if checked.labels is not None:
        report.id_accuracy = _id_accuracy(base, features["id"], paths["id"], checked.labels)
    for name in requested:
        if name in skipped:
            continue
        try:
            scorer = build_scorer(replace(_spec(config), method=name), model=base.model,
                                  class_vectors=base.class_vectors, method=given.get(name), reference=reference)
        except OODFilterError as error:
            if config.methods:  # asked for by name: say why it cannot run
                raise
            report.skipped[name] = str(error)
            continue
        scores = {set_name: scorer.score_features(f).ood_score.tolist() for set_name, f in features.items()}
        report.methods.append(name)
        report.scores[name] = scores
        report.results[name] = _metrics_for(scores, set_names, config.fpr_convention)
    if config.attack_eps:
        report.robustness = _robustness(config, base.model, given, report.methods, set_names)
    if config.out:
        _write_outputs(report, Path(config.out), plots=config.plots)
    return report


def _unready(config: EvalConfig, model: CLIPN, methods: dict[str, ScoreMethod],
             checked: CheckedEval) -> dict[str, str]:
    """Check each method against the loaded model, before any encoding; return the ones that cannot run and why.

    Raises:
        OODFilterError: a method asked for by name cannot run.

    """
    context = PrerequisiteContext(model, checked.class_names,
                                  Path(config.cache_dir) if config.cache_dir is not None else None,
                                  reference_features=bool(config.reference))
    skipped = {}
    for name, method in methods.items():
        try:
            check_method_runs_on(model, method)
            method.check_prerequisites(context)
        except OODFilterError as error:
            if config.methods:  # asked for by name: say why it cannot run
                raise
            skipped[name] = str(error)
    return skipped


def _robustness(config: EvalConfig, model: CLIPN, given: dict[str, ScoreMethod], methods: list[str],
                set_names: list[str]) -> dict[str, Any]:
    """Per OOD set, the feature attack's robustness section (``oodfilter robustness`` with its defaults)."""
    from oodfilter.evaluate.robustness import robustness

    sections = {}
    for set_name, source in zip(set_names, config.ood, strict=True):
        sections[set_name] = robustness(attack_config(config, source, methods), model=model,
                                        method_objects={m: given[m] for m in methods if m in given}).to_json()
    return sections


def _spec(config: EvalConfig) -> ScorerSpec:
    return eval_spec(config)


def _feature_scorer(config: EvalConfig, model: CLIPN, methods: list[ScoreMethod], class_names: list[str]) -> Scorer:
    """Build the MSP scorer whose model and class vectors every method shares (no-vectors if one needs them)."""
    spec = replace(_spec(config), method="msp")
    needs_no = model.no_branch_trained and any(method.needs_no_branch for method in methods)
    vectors = build_class_vectors(model, class_names, templates=spec.templates, cache_dir=spec.cache_dir,
                                  include_no=needs_no, precision=spec.precision)
    return build_scorer(spec, model=model, class_vectors=vectors, allow_untrained_no_branch=True)


def _encode_sets(
    config: EvalConfig, scorer: Scorer, sources: dict[str, str], images: dict[str, list[str]]
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], dict[str, str]]:
    """Encode every set once: features and decoded paths per set, and the reason of every unreadable file."""
    features: dict[str, torch.Tensor] = {}
    paths: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for set_name, source in sources.items():
        stored = _stored_features(source, scorer)
        if stored is not None:  # a scan --save-features manifest of this image tower: no image forward
            features[set_name], paths[set_name] = stored
            failed = [row for row in read_manifest(source) if not row.ok]
            errors.update(zip(resolved_paths(source, failed), (str(row.error) for row in failed), strict=True))
            continue
        encoded = encode_image_files(scorer.encode_images, scorer.model.preprocess, images[set_name],
                                     batch_size=config.batch_size, workers=config.workers)
        features[set_name], paths[set_name] = encoded.features, encoded.paths
        errors.update(encoded.errors)
    return features, paths, errors


def _stored_features(source: str, scorer: Scorer) -> tuple[torch.Tensor, list[str]] | None:
    """Return a manifest's stored features and ok-row paths, when it has them from this model's image tower."""
    if not (_is_manifest(source) and header_path(source).is_file()):
        return None
    found = matching_features(source, scorer.model.image_fingerprint(), scorer.precision)
    if found is None:
        logger.warning("%s stores no features of this image tower in %s: encoding its images instead", source,
                       scorer.precision)
        return None
    paths, features = found
    base = manifest_base(source)
    return torch.from_numpy(np.asarray(features, dtype=np.float32)), [resolve_row_path(p, base) for p in paths]


def _id_accuracy(scorer: Scorer, features: torch.Tensor, paths: list[str], labels: dict[str, int]) -> float | None:
    """Top-1 accuracy of the yes classifier on the ID images the labels name (None: they name none).

    :func:`~oodfilter.evaluate.checks.check_eval` refused labels that miss an ID image; a manifest's stored
    features cover its ok rows only, so only those count.
    """
    top = scorer.score_features(features).top_class
    known = [(i, labels[str(real_path(p))]) for i, p in enumerate(paths) if str(real_path(p)) in labels]
    return sum(int(top[i]) == label for i, label in known) / len(known) if known else None


def _metrics_for(scores: dict[str, list[float]], set_names: list[str], convention: str) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name in set_names:
        id_scores, ood_scores = scores["id"], scores[name]
        table[name] = {
            "auroc": metrics.auroc(id_scores, ood_scores),
            "fpr95": metrics.fpr_at_95_tpr(id_scores, ood_scores, convention=convention),
            "aupr_in": metrics.aupr_in(id_scores, ood_scores),
            "aupr_out": metrics.aupr_out(id_scores, ood_scores),
        }
    table["average"] = {key: sum(table[n][key] for n in set_names) / len(set_names) for key in METRICS}
    return table


def _write_outputs(report: EvalReport, out: Path, *, plots: bool) -> None:
    atomic_write_text(out, json.dumps(report.to_json(), indent=1))
    if plots:
        for method, scores in report.scores.items():
            labelled, notes = histogram_sets(report, method, scores)
            save_histogram_png(labelled, histogram_path(out, method), notes=notes,
                               title=f"{method}: scores of the ID images and of each OOD set")


def histogram_sets(report: EvalReport, method: str, scores: dict[str, list[float]]
                   ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Name the sets of ``method``'s histogram for its legend (``ID``, ``OOD NAME``) with each OOD set's metrics.

    The notes give each OOD set's AUROC and FPR95 against the ID set.
    """
    labelled: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    for name, values in scores.items():
        label = "ID" if name == "id" else f"OOD {name}"
        labelled[label] = values
        row = report.results.get(method, {}).get(name)
        if row is not None:
            notes[label] = f"AUROC {100 * row['auroc']:.1f}%, FPR95 {100 * row['fpr95']:.1f}%"
    return labelled, notes
