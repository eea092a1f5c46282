"""``oodfilter eval``: several score methods on one pass of image features, ID vs OOD sets."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodfilter.atomic import atomic_write_text
from oodfilter.data.discovery import discover_images
from oodfilter.data.loader import encode_image_files
from oodfilter.errors import InputError, OODFilterError
from oodfilter.evaluate import metrics
from oodfilter.evaluate.config import EvalConfig, load_eval_config  # noqa: F401 (load_eval_config re-exported)
from oodfilter.evaluate.histogram import save_histogram_png
from oodfilter.model.clipn import CLIPN
from oodfilter.outputs import check_output, starts_with
from oodfilter.scoring.factory import build_scorer, load_spec_model, read_spec_classes
from oodfilter.scoring.methods import ScoreMethod, score_methods
from oodfilter.scoring.scorer import Scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.features import header_path, matching_features
from oodfilter.sinks.manifest import FORMATS, read_manifest
from oodfilter.text.class_vectors import build_class_vectors

logger = logging.getLogger(__name__)

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
# Folder names that say nothing about a set; the parent folder names it instead.
_GENERIC_FOLDERS = {"images", "imgs", "img", "data", "val", "test", "train"}


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

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``results.json``."""
        return dataclasses.asdict(self)


def read_image_set(source: str) -> list[str]:
    """Return the image paths of a folder, glob or file list, or the ``ok`` rows of a scan manifest."""
    if Path(source).is_file() and Path(source).suffix.lower() in FORMATS:
        return [row.path for row in read_manifest(source) if row.ok]
    return [item.name for item in discover_images([source])]


def read_labels(path: str, class_names: list[str]) -> dict[str, int]:
    """Read ``file``/``path`` → ``class_index`` or ``class_name`` (TSV or CSV); keys are absolute paths.

    Raises:
        InputError: missing columns or a class name not in the class list.
    """
    table = Path(path)
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if table.suffix.lower() == ".tsv" else ","))
    if not rows:
        raise InputError(f"label file {table} is empty")
    path_key = "path" if "path" in rows[0] else "file" if "file" in rows[0] else None
    if path_key is None or not ({"class_index", "class_name"} & set(rows[0])):
        raise InputError(f"label file {table} needs a 'file' (or 'path') column and 'class_index' or 'class_name'")
    index_of = {name: i for i, name in reversed(list(enumerate(class_names)))}
    labels = {}
    for row in rows:
        file = Path(row[path_key])
        key = str((file if file.is_absolute() else table.parent / file).resolve())
        if "class_index" in row and row["class_index"] not in (None, ""):
            labels[key] = int(row["class_index"])
        elif row["class_name"] in index_of:
            labels[key] = index_of[row["class_name"]]
        else:
            raise InputError(f"label file {table}: class '{row['class_name']}' is not in the class list")
    return labels


def evaluate(
    config: EvalConfig, *, model: CLIPN | None = None, method_objects: dict[str, ScoreMethod] | None = None
) -> EvalReport:
    """Score ID and OOD image sets with every requested method from one pass of image features.

    ``method_objects`` supplies configured instances for some method names (e.g. a NegLabel with its own
    vocabulary); other names are created from the registry with their defaults.

    Raises:
        InputError: missing sets or classes, an unknown method, or a requested method that cannot run.
    """
    if not config.id or not config.ood:
        raise InputError("pass the in-distribution images (--id) and at least one OOD set (--ood)")
    if not config.classes:
        raise InputError("pass the class list (--classes)")
    config.validate()
    set_names = _set_names(config.ood)
    if config.attack_eps:  # checked before any image is scored
        _attack_config(config, config.ood[0], []).validate_budgets("--attack-eps")
    if config.out:
        _check_outputs(config, Path(config.out), set_names)
    given = {name.lower(): method for name, method in (method_objects or {}).items()}
    requested = [m.lower() for m in config.methods] or score_methods.list()
    base = _feature_scorer(config, model, [given.get(name) or score_methods.create(name) for name in requested])
    sources = {"id": config.id, **dict(zip(set_names, config.ood, strict=True))}
    features, paths, errors = _encode_sets(config, base, sources)
    report = EvalReport(methods=[], sets=set_names, results={}, scores={}, id_accuracy=None, errors=errors,
                        fpr_convention=config.fpr_convention)
    if config.id_labels:
        report.id_accuracy = _id_accuracy(base, features["id"], paths["id"], config.id_labels)
    for name in requested:
        try:
            scorer = build_scorer(replace(_spec(config), method=name), model=base.model,
                                  class_vectors=base.class_vectors, method=given.get(name))
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


def _robustness(config: EvalConfig, model: CLIPN, given: dict[str, ScoreMethod], methods: list[str],
                set_names: list[str]) -> dict[str, Any]:
    """Per OOD set, the feature attack's robustness section (``oodfilter robustness`` with its defaults)."""
    from oodfilter.evaluate.robustness import robustness

    sections = {}
    for set_name, source in zip(set_names, config.ood, strict=True):
        sections[set_name] = robustness(_attack_config(config, source, methods), model=model,
                                        method_objects={m: given[m] for m in methods if m in given}).to_json()
    return sections


def _attack_config(config: EvalConfig, source: str, methods: list[str]) -> Any:
    """Return the feature attack of ``--attack-eps`` on one OOD set, as a RobustnessConfig."""
    from oodfilter.evaluate.robustness_config import RobustnessConfig

    return RobustnessConfig(model=config.model, classes=config.classes, pretrained=config.pretrained, id=config.id,
                            ood=source, methods=methods, eps=config.attack_eps, steps=config.attack_steps,
                            objectives=["feature"], templates=config.templates, cache_dir=config.cache_dir,
                            batch_size=config.batch_size, device=config.device)


def _spec(config: EvalConfig) -> ScorerSpec:
    return ScorerSpec(model=config.model, classes=config.classes, pretrained=config.pretrained,
                      templates=config.templates, device=config.device, precision=config.precision,
                      batch_size=config.batch_size, cache_dir=config.cache_dir)


def _feature_scorer(config: EvalConfig, model: CLIPN | None, methods: list[ScoreMethod]) -> Scorer:
    """Build the MSP scorer whose model and class vectors every method shares (no-vectors if one needs them)."""
    spec = replace(_spec(config), method="msp")
    clipn = model if model is not None else load_spec_model(spec)
    needs_no = clipn.no_branch_trained and any(method.needs_no_branch for method in methods)
    vectors = build_class_vectors(clipn, read_spec_classes(spec), templates=spec.templates, cache_dir=spec.cache_dir,
                                  include_no=needs_no, precision=spec.precision)
    return build_scorer(spec, model=clipn, class_vectors=vectors, allow_untrained_no_branch=True)


def _encode_sets(
    config: EvalConfig, scorer: Scorer, sources: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], dict[str, str]]:
    """Encode every set once: features and decoded paths per set, and the reason of every unreadable file."""
    features: dict[str, torch.Tensor] = {}
    paths: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for set_name, source in sources.items():
        stored = _stored_features(source, scorer)
        if stored is not None:  # a scan --save-features manifest of this image tower: no image forward
            features[set_name], paths[set_name] = stored
            errors.update({row.path: str(row.error) for row in read_manifest(source) if not row.ok})
            continue
        listed = read_image_set(source)
        if not listed:
            raise InputError(f"the {set_name} set {source} holds no images")
        encoded = encode_image_files(scorer.encode_images, scorer.model.preprocess, listed,
                                     batch_size=config.batch_size, workers=config.workers)
        features[set_name], paths[set_name] = encoded.features, encoded.paths
        errors.update(encoded.errors)
    return features, paths, errors


def _stored_features(source: str, scorer: Scorer) -> tuple[torch.Tensor, list[str]] | None:
    """Return a manifest's stored features and ok-row paths, when it has them from this model's image tower."""
    if not (Path(source).is_file() and Path(source).suffix.lower() in FORMATS and header_path(source).is_file()):
        return None
    found = matching_features(source, scorer.model.image_fingerprint(), scorer.precision)
    if found is None:
        logger.warning("%s stores no features of this image tower in %s: encoding its images instead", source,
                       scorer.precision)
        return None
    paths, features = found
    return torch.from_numpy(np.asarray(features, dtype=np.float32)), paths


def _id_accuracy(scorer: Scorer, features: torch.Tensor, paths: list[str], labels_file: str) -> float | None:
    """Top-1 accuracy of the yes classifier on the ID images the label file names (None: it names none)."""
    top = scorer.score_features(features).top_class
    labels = read_labels(labels_file, scorer.class_vectors.class_names)
    known = [(i, labels[str(Path(p).resolve())]) for i, p in enumerate(paths) if str(Path(p).resolve()) in labels]
    return sum(int(top[i]) == label for i, label in known) / len(known) if known else None


def _check_outputs(config: EvalConfig, out: Path, set_names: list[str]) -> None:
    """Refuse to replace anything but earlier results (and their PNGs) or one of the image sets read."""
    inputs = [config.id, *config.ood] + ([config.id_labels] if config.id_labels else [])
    check_output(out, overwrite=config.overwrite, kind="results JSON", is_expected_kind=starts_with(b"{"),
                 inputs=inputs)
    if config.plots:
        for method in config.methods or score_methods.list():
            check_output(_histogram_path(out, method.lower()), overwrite=config.overwrite, kind="histogram PNG",
                         is_expected_kind=starts_with(b"\x89PNG"), inputs=inputs)


def _histogram_path(out: Path, method: str) -> Path:
    return out.with_name(f"{out.stem}.{method}.png")


def _set_names(sources: list[str]) -> list[str]:
    names: list[str] = []
    for source in sources:
        path = Path(source.rstrip("/"))
        base = (path.parent.name if path.stem in _GENERIC_FOLDERS else path.stem) or "ood"
        name, n = base, 2
        while name in names or name == "id":
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


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
            save_histogram_png(scores, _histogram_path(out, method),
                               title=f"{method}: ID vs OOD scores")
