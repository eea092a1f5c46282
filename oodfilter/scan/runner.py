"""The scan: discover files, decode them in worker processes, score on the device, write the manifest.

Scoring is resumable: every batch is appended to the manifest and flushed, and a re-run with
``resume=True`` scores only the inputs the manifest lacks (refusing if the model, method, class list,
templates or threshold differ). File actions (move/copy/link) run after scoring, from the manifest,
through a journal that ``undo`` reverses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oodfilter import __version__
from oodfilter.atomic import atomic_write_text
from oodfilter.data.discovery import DiscoveredFile, discover_images
from oodfilter.data.encode import image_batches
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.model.loading import load_model
from oodfilter.scan.config import ScanConfig
from oodfilter.scoring.methods import choose_method, scorers
from oodfilter.scoring.scorer import Scorer
from oodfilter.sinks.actions import ActionReport, PlannedAction, apply_actions, plan_actions
from oodfilter.sinks.manifest import ManifestWriter, Row, read_manifest, sidecar
from oodfilter.text.classes import clean_class_names, read_class_names
from oodfilter.text.index import build_text_index

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

    @property
    def images_per_second(self) -> float:
        """Scoring throughput of this run."""
        return self.scanned / self.seconds if self.seconds > 0 else 0.0


def scan(config: ScanConfig, *, progress: Progress | None = None, model: CLIPN | None = None) -> ScanSummary:
    """Run a scan as configured and return its summary.

    Args:
        config: The scan configuration.
        progress: Called as ``progress(done, total)`` after every batch.
        model: An already loaded model to use instead of ``config.model`` (for library callers).

    Raises:
        InputError: bad inputs or options, an existing manifest without ``resume``/``overwrite``, or a
            resume against a manifest made with another model, method, class list or threshold.

    """
    config.validate()
    out = Path(config.out)
    files = discover_images(config.inputs, include=config.include, exclude=config.exclude, recursive=config.recursive)
    _check_dest_outside_inputs(config, files)
    _check_output_is_free(config, out)
    names = clean_class_names(config.classes) if isinstance(config.classes, list) else read_class_names(config.classes)
    clipn = model if model is not None else load_model(config.model, config.pretrained, device=config.device)
    method = choose_method(config.method, no_branch_trained=clipn.no_branch_trained, model_name=clipn.source.name)
    if config.action != "tag" and config.threshold is None and not scorers.get(method).threshold_free:
        raise InputError(f"--action {config.action} needs decisions, and '{method}' has no threshold-free rule: "
                         "pass --threshold X")
    index = build_text_index(clipn, names, templates=config.templates, cache_dir=config.cache_dir,
                             include_no=scorers.get(method).needs_no_branch)
    scorer = Scorer(clipn, index, method, threshold=config.threshold, batch_size=config.batch_size,
                    precision=config.precision, cache_dir=config.cache_dir)
    meta = _run_identity(config, clipn, index.fingerprints, names, method)
    done_paths = _resume_state(config, out, meta)
    _write_beside(out, meta, config)

    wanted = [str(item.path) for item in files]
    remaining = [path for path in wanted if path not in done_paths]
    summary = ScanSummary(manifest=out, method=method)
    start = time.perf_counter()
    if remaining and config.engine == "ray":
        from oodfilter.engines.ray_engine import score_files_with_ray

        score_files_with_ray(
            clipn, remaining, out, append=config.resume,
            scorer_options={"method": method, "threshold": config.threshold, "batch_size": config.batch_size,
                            "precision": config.precision, "cache_dir": config.cache_dir},
            index_options={"class_names": names, "templates": config.templates, "cache_dir": config.cache_dir,
                           "include_no": scorers.get(method).needs_no_branch},
            batch_size=config.batch_size, address=config.ray_address, num_actors=config.ray_actors,
            max_pixels=config.max_pixels, progress=progress, total=len(wanted), already=len(wanted) - len(remaining),
        )
    elif remaining:
        _score_files(config, scorer, remaining, out, progress, len(wanted), len(wanted) - len(remaining))
    summary.seconds = time.perf_counter() - start
    summary.scanned = len(remaining)

    rows_by_path = {row["path"]: row for row in read_manifest(out)}
    rows = [rows_by_path[path] for path in wanted if path in rows_by_path]
    summary.total = len(rows)
    summary.ok = sum(row["status"] == "ok" for row in rows)
    summary.errors = summary.total - summary.ok
    summary.ood = sum(row.get("is_ood") is True for row in rows)
    summary.in_distribution = sum(row.get("is_ood") is False for row in rows)
    if config.action != "tag":
        _run_actions(config, files, rows, out, summary)
    return summary


def _check_output_is_free(config: ScanConfig, out: Path) -> None:
    exists = out.exists() or sidecar(out, "partial.jsonl").exists()
    if exists and not (config.resume or config.overwrite):
        raise InputError(f"manifest {out} already exists: pass --resume to continue it, --overwrite to replace "
                         "it, or --out another file")


def _check_dest_outside_inputs(config: ScanConfig, files: list[DiscoveredFile]) -> None:
    if config.action == "tag" or not config.dest:
        return
    dest = Path(config.dest).resolve()
    for root in {item.root.resolve() for item in files}:
        if dest == root or dest.is_relative_to(root):
            raise InputError(f"--dest {config.dest} is inside the scanned folder {root}; choose a folder outside it "
                             "so a later scan does not pick up the moved files")


def _run_identity(
    config: ScanConfig, model: CLIPN, fingerprints: dict[str, str], names: list[str], method: str
) -> dict[str, Any]:
    return {
        "oodfilter_version": __version__,
        "cwd": os.getcwd(),
        "model": model.source.name,
        "fingerprints": fingerprints,
        "method": method,
        "threshold": config.threshold,
        "decision": f"ood_score > {config.threshold}" if config.threshold is not None else
        (f"{method} threshold-free rule" if scorers.get(method).threshold_free else None),
        "classes_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "num_classes": len(names),
        "templates": list(config.templates) if not isinstance(config.templates, str) else config.templates,
    }


_IDENTITY_KEYS = ("fingerprints", "method", "threshold", "classes_sha256", "templates")


def _resume_state(config: ScanConfig, out: Path, meta: dict[str, Any]) -> set[str]:
    if not config.resume:
        return set()
    previous_file = sidecar(out, "meta.json")
    if not previous_file.is_file():
        if out.exists():
            raise InputError(f"cannot resume {out}: its {previous_file.name} is missing, so its settings are unknown")
        return set()
    previous = json.loads(previous_file.read_text())
    different = [key for key in _IDENTITY_KEYS if previous.get(key) != meta[key]]
    if different:
        what = ", ".join("model" if key == "fingerprints" else key.replace("classes_sha256", "class list")
                         for key in different)
        raise InputError(f"cannot resume {out}: it was made with a different {what}; use the same settings, "
                         "or --overwrite / another --out to start again")
    return {row["path"] for row in read_manifest(out)}


def _write_beside(out: Path, meta: dict[str, Any], config: ScanConfig) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sidecar(out, "meta.json"), json.dumps(meta, indent=2))
    atomic_write_text(sidecar(out, "config.yaml"), yaml.safe_dump(config.to_dict(), sort_keys=True))


def _score_files(
    config: ScanConfig,
    scorer: Scorer,
    paths: list[str],
    out: Path,
    progress: Progress | None,
    total: int,
    already: int,
) -> None:
    if scorer.model.preprocess is None:
        raise InputError("the model has no image transform; it cannot scan files")
    loader = image_batches(paths, scorer.model.preprocess, batch_size=config.batch_size, workers=config.workers,
                           pin_memory=scorer.device.type == "cuda", max_pixels=config.max_pixels)
    writer = ManifestWriter(out, append=config.resume)
    done = already
    if progress is not None:
        progress(done, total)
    try:
        for batch in loader:
            rows = [dataclasses.asdict(row) for row in scorer.score_decoded(paths, batch)]
            writer.write(rows)
            done += len(rows)
            if progress is not None:
                progress(done, total)
    finally:
        writer.close()


def _run_actions(
    config: ScanConfig, files: list[DiscoveredFile], rows: list[Row], out: Path, summary: ScanSummary
) -> None:
    want_ood = config.select == "ood"
    chosen = {row["path"] for row in rows if row["status"] == "ok" and row.get("is_ood") is want_ood}
    pairs = [(item.path, item.relative) for item in files if str(item.path) in chosen]
    planned = plan_actions(config.action, pairs, Path(str(config.dest)))
    if config.dry_run:
        summary.planned = planned
        return
    summary.actions = apply_actions(planned, sidecar(out, "journal.jsonl"))
