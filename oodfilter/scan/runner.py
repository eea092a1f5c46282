"""The scan: discover files, decode them in worker processes, score on the device, write the manifest.

Scoring is resumable: every batch is appended to the manifest and flushed, and a re-run with
``resume=True`` scores only the inputs the manifest lacks (refusing if the model, method, class list,
templates or threshold differ). File actions (move/copy/link) run after scoring, from the manifest,
through a journal that ``undo`` reverses.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

import yaml

from oodfilter import __version__
from oodfilter.atomic import atomic_write_text
from oodfilter.data.discovery import Discovered, DiscoveredFile
from oodfilter.decision.advice import decision_advice
from oodfilter.decision.identity import classes_digest
from oodfilter.device import inference_precision
from oodfilter.engines.ray_engine import score_files_with_ray
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.model.pretrained import RANDOM_WEIGHTS
from oodfilter.report.class_rates import ClassRate
from oodfilter.safe_yaml import YamlAliasError, load_yaml
from oodfilter.scan.config import ScanConfig
from oodfilter.scan.decisions import DecisionPlan, decide_keep_fraction, plan_decisions, undecided
from oodfilter.scan.label_check import label_rows
from oodfilter.scan.preflight import RESUME_WORDS, PreparedScan, prepare_scan, resume_refused, scorer_spec
from oodfilter.scoring.factory import build_scorer
from oodfilter.scoring.files import score_files
from oodfilter.scoring.reference import reference_record
from oodfilter.scoring.scorer import Scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.actions import ActionReport, PlannedAction, apply_actions, plan_actions
from oodfilter.sinks.features import FeatureWriter, header_path, remove_features
from oodfilter.sinks.manifest import ManifestWriter, finish_manifest, sidecar
from oodfilter.sinks.readback import ManifestTally, ok_paths, tally_manifest
from oodfilter.sinks.reshard import RESHARD, ReshardReport, reshard
from oodfilter.sinks.rows import ManifestRow
from oodfilter.text.templates import resolve_template_choice, templates_digest

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class ScanSummary:
    """The outcome of a scan.

    Attributes:
        manifest: The manifest file.
        total: Inputs in the manifest for this scan's files.
        scanned: Inputs scored in this run (the rest came from a resumed manifest).
        ok: Inputs scored successfully.
        errors: Inputs that could not be decoded (error rows).
        ood: Inputs decided OOD.
        in_distribution: Inputs decided in-distribution.
        seconds: Wall time of the scoring phase.
        method: The score method.
        actions: What the file action did (None for ``tag``).
        planned: The actions a dry run would carry out.
        resharded: What ``--action reshard`` wrote (or would write, in a dry run); None for other actions.
        per_class: Per top class: images, flagged, share, median score (most images first).
        label_issues: Images that look confidently like another class than their folder's (the label check
            of ``classes_from_folders``); None without it.
        threshold: The threshold the scan decided with (given, calibrated, or the keep fraction's boundary);
            None for a threshold-free rule or no decision.
        decision: The decision rule in words (as in the manifest meta); None when nothing decides.

    """

    manifest: Path
    total: int = 0
    scanned: int = 0
    ok: int = 0
    errors: int = 0
    ood: int = 0
    in_distribution: int = 0
    seconds: float = 0.0
    method: str = ""
    actions: ActionReport | None = None
    planned: list[PlannedAction] = field(default_factory=list)
    resharded: ReshardReport | None = None
    per_class: list[ClassRate] = field(default_factory=list)
    label_issues: int | None = None
    threshold: float | None = None
    decision: str | None = None

    @property
    def images_per_second(self) -> float:
        """Scoring throughput of this run."""
        return self.scanned / self.seconds if self.seconds > 0 else 0.0


def scan(config: ScanConfig, *, progress: Progress | None = None, model: CLIPN | None = None,
         prepared: PreparedScan | None = None) -> ScanSummary:
    """Run a scan as configured and return its summary.

    Args:
        config: The scan configuration.
        progress: Called as ``progress(done, total)`` after every batch.
        model: An already loaded model to use instead of ``config.model`` (for library callers).
        prepared: :func:`~oodfilter.scan.preflight.prepare_scan` of ``config``, when the caller ran it (the
            CLI does, before importing torch); its lock is the caller's to release. Run here otherwise.

    Raises:
        InputError: bad inputs or options, an existing manifest without ``resume``/``overwrite``, or a
            resume against a manifest made with another model, method, class list or threshold.

    """
    if prepared is not None:
        return _locked_scan(prepared, progress, model)
    with prepare_scan(config, model_given=model is not None) as ready:  # every check that needs no model
        return _locked_scan(ready, progress, model)


def _locked_scan(prepared: PreparedScan, progress: Progress | None, model: CLIPN | None) -> ScanSummary:
    config, out, files, previous, rule = prepared.config, prepared.out, prepared.files, prepared.previous, prepared.rule
    spec = scorer_spec(config)
    scorer = build_scorer(spec, model=model)
    done = _resume_state(config, out, _identity(config, scorer, rule), previous, scorer, prepared.done)
    wanted = [item.name for item in files]
    remaining = [path for path in wanted if path not in done]
    plan = plan_decisions(config, scorer, rule, previous,
                          {os.path.abspath(item.name) if item.local else item.name for item in files})
    scorer.threshold = plan.threshold
    _advise(scorer, plan)
    meta = _run_identity(config, scorer, plan)
    _write_beside(out, meta, config)

    summary = ScanSummary(manifest=out, method=scorer.method.name, decision=meta["decision"])
    start = time.perf_counter()
    if remaining:
        unreadable = [ManifestRow(item.name, "error", error=item.error) for item in files
                      if item.error is not None and item.name not in done]
        labels = prepared.folder_classes
        if labels is not None:
            unreadable = label_rows(unreadable, labels.get)
        unreadable_paths = {row.path for row in unreadable}
        readable = [path for path in remaining if path not in unreadable_paths]
        features = _feature_writer(config, out, scorer, done)
        scored = _row_batches(config, spec, scorer, readable, features) if readable else iter([])
        if labels is not None:  # the label check: the folder's class against the yes-branch's confident top class
            scored = (label_rows(rows, labels.get, config.label_min_prob) for rows in scored)
        if plan.keep_fraction is not None:  # decided once every score is known
            scored = (undecided(rows) for rows in scored)
        batches: Iterator[list[ManifestRow]] = chain([unreadable] if unreadable else [], scored)
        if features is not None:  # each batch's row keys reach the disk after its features, before its rows
            batches = features.bound(batches)
        writer = ManifestWriter(out, append=config.resume, label_columns=labels is not None)
        try:
            _write_rows(batches, writer, progress, len(wanted), len(wanted) - len(remaining))
        except BaseException:
            if features is not None:
                features.abort()
            raise
        if features is not None:
            features.close()
    elif config.resume:  # nothing left to score: a Parquet manifest a kill left unfinished is finished now
        finish_manifest(out)
    summary.threshold = plan.threshold
    if plan.keep_fraction is not None:
        meta["keep_boundary"] = summary.threshold = decide_keep_fraction(out, plan.keep_fraction)
        atomic_write_text(sidecar(out, "meta.json"), json.dumps(meta, indent=2))
    summary.seconds = time.perf_counter() - start
    summary.scanned = len(remaining)
    del done, remaining  # a million paths each: not kept while the manifest is read back
    tally = tally_manifest(out, wanted, None if config.action in ("tag", RESHARD) else config.select == "ood")
    _count(summary, tally)
    if prepared.folder_classes is not None:
        summary.label_issues = tally.label_issues
    if config.action == RESHARD:
        summary.resharded = reshard(out, [item.name for item in files if item.error is None], str(config.dest),
                                    select_ood=config.select == "ood", dry_run=config.dry_run)
    elif config.action != "tag":
        _run_actions(config, files, tally.selected, out, summary)
    return summary


def _advise(scorer: Scorer, plan: DecisionPlan) -> None:
    """Warn, with the measured consequence, about a rule that does poorly with this class-list length."""
    rule_decides = plan.threshold is None and plan.keep_fraction is None and scorer.method.threshold_free
    for message in decision_advice(scorer.method.name, len(scorer.class_vectors), rule_decides=rule_decides):
        warnings.warn(message, stacklevel=3)


def _feature_writer(config: ScanConfig, out: Path, scorer: Scorer, done: set[str]) -> FeatureWriter | None:
    """Return the writer of ``--save-features`` (None without it), cut to the manifest's ok rows on resume.

    Raises:
        InputError: a resume that would leave stored features out of step with the rows (features of
            another image tower, or a scan with features resumed without ``--save-features`` or the
            reverse).

    """
    stored = header_path(out).is_file()
    resuming = config.resume and bool(done)
    if resuming and stored != config.save_features:
        have = "stores image features" if stored else "has no stored image features"
        raise InputError(f"cannot resume {out}: it {have}, so rows and features would fall out of step; resume "
                         f"{'with' if stored else 'without'} --save-features, or --overwrite")
    if not resuming:  # a replaced scan's features belong to no row any more (rescored manifests then say so)
        remove_features(out)
    if not config.save_features:
        return None
    keep = ok_paths(out) if resuming else None
    source = scorer.model.source
    name = str(Path(source.name).resolve()) if Path(source.name).exists() else source.name  # a bundle folder
    pretrained = source.pretrained
    if pretrained is None and source.kind == "open_clip" and not source.name.startswith(("hf-hub:", "local-dir:")):
        pretrained = RANDOM_WEIGHTS  # an open_clip name loaded without weights: rescore must not fetch its default
    return FeatureWriter(out, scorer.model.embed_dim, scorer.model.image_fingerprint(), name, keep_paths=keep,
                         precision=scorer.precision,
                         pretrained=pretrained)


def _row_batches(config: ScanConfig, spec: ScorerSpec, scorer: Scorer, paths: list[str],
                 features: FeatureWriter | None = None) -> Iterator[list[ManifestRow]]:
    if config.engine == "ray":
        # actors need no class-list file; they decide with the threshold the scan resolved (given or calibrated)
        ray_spec = replace(spec, classes=list(scorer.class_vectors.class_names), threshold=scorer.threshold)
        return score_files_with_ray(ray_spec, scorer.model, paths, batch_size=config.batch_size,
                                    address=config.ray_address, num_actors=config.ray_actors,
                                    max_pixels=config.max_pixels,
                                    feature_sink=features.write if features is not None else None,
                                    fast_decode=config.fast_decode)
    return score_files(scorer, paths, workers=config.workers, max_pixels=config.max_pixels,
                       feature_sink=features.write if features is not None else None, fast_decode=config.fast_decode)


def _write_rows(
    batches: Iterator[list[ManifestRow]], writer: ManifestWriter, progress: Progress | None, total: int, done: int
) -> None:
    """Append each batch of rows, flush, report progress: the one writer loop of every engine.

    On a failure the manifest keeps the rows flushed so far (for a resume) and the failure is what is
    raised; a Parquet manifest is finished only when every batch was written.
    """
    if progress is not None:
        progress(done, total)
    try:
        for rows in batches:
            writer.write(rows)
            done += len(rows)
            if progress is not None:
                progress(done, total)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _count(summary: ScanSummary, tally: ManifestTally) -> None:
    summary.total = tally.total
    summary.ok = tally.ok
    summary.errors = tally.errors
    summary.ood = tally.ood
    summary.in_distribution = tally.in_distribution
    summary.per_class = tally.per_class


def _run_identity(config: ScanConfig, scorer: Scorer, plan: DecisionPlan) -> dict[str, Any]:
    """Return the manifest meta: what a resume must share (:func:`_identity`), the decision, provenance."""
    method = scorer.method
    return {
        "oodfilter_version": __version__,
        "cwd": os.getcwd(),
        "model": scorer.model.source.name,
        **_identity(config, scorer, plan.rule),
        **plan.meta(),
        "decision": plan.describe(method.name, method.threshold_free),
        "num_classes": len(scorer.class_vectors),
        "reference": reference_record(scorer),
    }


def _identity(config: ScanConfig, scorer: Scorer, rule: dict[str, Any]) -> dict[str, Any]:
    """Return the settings a resume must share, known before any calibration is fitted."""
    return {"fingerprints": scorer.class_vectors.fingerprints, "method": scorer.method.name, "decision_rule": rule,
            "precision": scorer.precision, "decode": "fast" if config.fast_decode else "full",
            "label_check": config.classes_from_folders,
            "classes_sha256": classes_digest(list(scorer.class_vectors.class_names)),
            "templates": _templates_identity(config.templates, clipn_model=scorer.model.no_branch_trained),
            "templates_sha256": templates_digest(scorer.class_vectors.templates),
            "reference_sha256": scorer.reference.sha256 if scorer.reference is not None else None}


def _templates_identity(templates: str | list[str], *, clipn_model: bool) -> str | list[str]:
    """Return the template set a scan used, ``auto`` resolved, as JSON-ready data."""
    choice = resolve_template_choice(templates, clipn_model=clipn_model)
    return choice if isinstance(choice, str) else list(choice)


# The templates' name is recorded for people; what a resume compares is the digest of their text.
_IDENTITY_KEYS = ("fingerprints", "method", "decision_rule", "classes_sha256", "templates_sha256", "precision",
                  "decode", "label_check", "reference_sha256")


def _legacy_precision(previous: dict[str, Any], scorer: Scorer, out: Path) -> None:
    """Give a manifest from before precisions were recorded the precision it was scanned in.

    That is what ``auto`` resolved to then: fp32 when its config.yaml says it ran on the CPU, else what
    ``auto`` resolves to on this run's device (the same rule as then).
    """
    if "precision" in previous:
        return
    try:
        recorded = load_yaml(sidecar(out, "config.yaml").read_text(encoding="utf-8"), str(sidecar(out, "config.yaml")))
    # ValueError: not UTF-8, an int too long; RecursionError: nested too deeply
    except (OSError, yaml.YAMLError, YamlAliasError, ValueError, RecursionError):
        recorded = None
    ran_on_cpu = isinstance(recorded, dict) and recorded.get("device") == "cpu"
    previous["precision"] = "fp32" if ran_on_cpu else inference_precision(scorer.device, "auto")


def _resume_state(config: ScanConfig, out: Path, meta: dict[str, Any], previous: dict[str, Any] | None,
                  scorer: Scorer, done: set[str]) -> set[str]:
    """Return ``done`` (the resumed manifest's inputs) once every setting the resume must share is the same."""
    if previous is None:
        return set()
    _legacy_precision(previous, scorer, out)
    previous.setdefault("decode", "full")  # made before --fast-decode existed: every image decoded in full
    previous.setdefault("label_check", False)  # made before the label check existed
    different = [key for key in _IDENTITY_KEYS if previous.get(key) != meta[key]]
    if different:
        raise resume_refused(out, different, {**RESUME_WORDS, "precision": (
            f"precision ({previous.get('precision')}, this run {meta['precision']}: pass --precision "
            f"{previous.get('precision')})")})
    return done


def _write_beside(out: Path, meta: dict[str, Any], config: ScanConfig) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sidecar(out, "meta.json"), json.dumps(meta, indent=2))
    atomic_write_text(sidecar(out, "config.yaml"), yaml.safe_dump(config.to_dict(), sort_keys=True))


def _run_actions(
    config: ScanConfig, files: list[Discovered], chosen: set[str], out: Path, summary: ScanSummary
) -> None:
    pairs = [(item.path, item.relative) for item in files if isinstance(item, DiscoveredFile) and item.name in chosen]
    planned = plan_actions(config.action, pairs, Path(str(config.dest)))
    if config.dry_run:
        summary.planned = planned
        return
    summary.actions = apply_actions(planned, sidecar(out, "journal.jsonl"))
