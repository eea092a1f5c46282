"""``apply``: a new decision (and a file action) for a scanned manifest, from its stored scores.

No model loads and no image is scored (nor is torch imported): the rows' scores are decided again
(:mod:`oodfilter.scan.apply_decide`), written as a new manifest whose meta says what decided them, and
the action runs from it as a scan's does: move, copy and link through the same signed journal that
``oodfilter undo`` reverses (never overwriting anything), reshard into new shards, or list the selected
paths. Everything is checked before anything is written, and a dry run writes nothing at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from oodfilter import __version__
from oodfilter.atomic import atomic_write_text
from oodfilter.data.remote import is_url
from oodfilter.data.shards import split_sample_name
from oodfilter.decision.calibration import Calibration
from oodfilter.decision.review import Review, check_review, load_review
from oodfilter.errors import InputError
from oodfilter.model.file_digest import file_sha256
from oodfilter.real_path import real_path
from oodfilter.safe_yaml import YamlAliasError, load_yaml
from oodfilter.scan.apply_config import LIST, ApplyConfig
from oodfilter.scan.apply_decide import DECISION_KEYS, decide_rows
from oodfilter.sinks.actions import ActionReport, PlannedAction, apply_actions, plan_actions
from oodfilter.sinks.features import remove_features
from oodfilter.sinks.lock import ManifestLock
from oodfilter.sinks.manifest import (
    check_manifest_file,
    no_rows_error,
    read_manifest,
    read_meta,
    rewrite_manifest,
    sidecar,
)
from oodfilter.sinks.reshard import RESHARD, ReshardReport, plan_reshard, reshard_rows
from oodfilter.sinks.row_paths import manifest_base, resolve_row_path
from oodfilter.sinks.rows import ManifestRow

FILE_ACTIONS = ("move", "copy", "link")
_GLOB_CHARS = set("*?[")


@dataclass
class ApplySummary:
    """The outcome of an apply.

    Attributes:
        manifest: The new manifest (not written by a dry run).
        source: The manifest the decision was applied to.
        total: Rows.
        ok: Rows with a score.
        ood: Rows decided OOD.
        in_distribution: Rows decided in-distribution.
        decision: What decided the rows, in words.
        changed: Rows made error rows because their file changed since the scan.
        missing: Rows made error rows because their file is gone since the scan.
        ignored_marks: Review marks on error rows, left as they are.
        selected: Resolved paths of the rows the action takes (the selected decision), in manifest order.
        actions: What move/copy/link did (None for other actions and dry runs).
        planned: What move/copy/link would do (a dry run).
        resharded: What reshard wrote (or would write, in a dry run).
        dry_run: Nothing was written.

    """

    manifest: Path
    source: Path
    total: int = 0
    ok: int = 0
    ood: int = 0
    in_distribution: int = 0
    decision: str | None = None
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored_marks: list[str] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    actions: ActionReport | None = None
    planned: list[PlannedAction] = field(default_factory=list)
    resharded: ReshardReport | None = None
    dry_run: bool = False

    @property
    def errors(self) -> int:
        """Error rows (the scan's, and files changed or gone since it)."""
        return self.total - self.ok


def apply_manifest(manifest: str | Path, *, out: str | Path | None = None, threshold: float | None = None,
                   calibration: str | Path | None = None, keep_fraction: float | None = None,
                   id_recall: float | None = None, calibrate_on: list[str] | None = None,
                   review: str | Path | None = None, only_marked: bool = False, action: str = "tag",
                   select: str = "ood", dest: str | Path | None = None, dry_run: bool = False,
                   overwrite: bool = False) -> ApplySummary:
    """Apply a decision and an action to a scanned manifest without scoring anything again.

    Each ok row is decided by the review's mark, else the review's threshold, else the decision option
    given here, else the manifest's own decision; error rows stay as they are, and a row whose file was
    modified (a later mtime) or deleted after the scan becomes an error row. The rows
    are written to ``out`` (never over an existing file unless ``overwrite``), then the action runs as a
    scan's does (``move``/``copy``/``link`` journaled for ``oodfilter undo``, and only on rows below the
    folders the scan read). With ``only_marked`` the review's marks alone decide: the other rows get no
    decision and no action takes them (reshard keeps them), so a move takes exactly the files marked
    "drop". See :class:`~oodfilter.scan.apply_config.ApplyConfig` for each argument.

    Example::

        summary = oodfilter.apply_manifest("scan.jsonl", keep_fraction=0.9, action="move", dest="rejected")

    Raises:
        InputError: bad options, a manifest or review file that cannot be used (a review made on another
            version of the manifest, marks of unknown paths), an existing ``out``, a ``dest`` inside the
            scanned folders, an action on rows that are not local files, or rows without a decision.

    """
    config = ApplyConfig(manifest=str(manifest), out=None if out is None else str(out), threshold=threshold,
                         calibration=None if calibration is None else str(calibration), keep_fraction=keep_fraction,
                         id_recall=id_recall, calibrate_on=list(calibrate_on or []),
                         review=None if review is None else str(review), only_marked=only_marked, action=action,
                         select=select, dest=None if dest is None else str(dest), dry_run=dry_run,
                         overwrite=overwrite)
    return run_apply(config)


def run_apply(config: ApplyConfig) -> ApplySummary:
    """Run an apply as configured (:func:`apply_manifest` with an :class:`ApplyConfig`).

    Raises:
        InputError: see :func:`apply_manifest`.

    """
    config.validate()
    source, out = Path(config.manifest), config.out_path
    check_manifest_file(source)
    _check_output_is_free(config, source, out)
    rows = read_manifest(source)
    if not rows:
        raise no_rows_error(source)
    meta = read_meta(source)
    base = manifest_base(source, meta)
    resolved = [resolve_row_path(row.path, base) for row in rows]
    review = _review(config, source, rows)
    recorded = _input_roots(source, meta, base)
    roots = recorded or []
    _check_action(config, source, rows, resolved, recorded)
    files_as_of = _files_as_of(source, meta)
    decided = decide_rows(config, rows, meta, review, resolved, files_as_of)
    if config.action == RESHARD:
        _check_shards_unchanged(source, decided.changed, decided.missing, base)
    select_ood = config.select == "ood"
    summary = ApplySummary(out, source, total=len(rows), dry_run=config.dry_run,
                           decision=decided.meta.get("decision"), changed=decided.changed, missing=decided.missing,
                           ignored_marks=decided.ignored_marks)
    for row, path in zip(decided.rows, resolved, strict=True):
        summary.ok += row.ok
        summary.ood += row.is_ood is True
        summary.in_distribution += row.is_ood is False
        if row.ok and row.is_ood is select_ood:
            summary.selected.append(path)
    if config.action not in ("tag", LIST) and not config.only_marked and (review is None or config.action == RESHARD):
        _check_decided(config, decided.rows)  # rows a review leaves undecided are left alone (reshard: kept)
    if config.dry_run:
        _act(config, summary, decided.rows, resolved, roots, journal=None)
        return summary
    new_meta = {**_new_meta(config, meta, decided.meta, base, roots, review), "files_as_of": files_as_of}
    with ManifestLock(out):
        _write(out, decided.rows, new_meta, decided.calibration)
        _act(config, summary, decided.rows, resolved, roots, journal=sidecar(out, "journal.jsonl"))
    return summary


def _check_output_is_free(config: ApplyConfig, source: Path, out: Path) -> None:
    """Refuse to replace anything but a manifest of ours, and never the source (or its review or calibration)."""
    given = [source, *(Path(p) for p in (config.review, config.calibration) if p), *map(Path, config.calibrate_on)]
    if any(real_path(out) == real_path(path) for path in given):
        raise InputError(f"--out {out} is one of the files apply reads; choose another manifest file")
    sides = [sidecar(out, name) for name in ("meta.json", "calibration.json", "partial.jsonl", "features.json")]
    taken = out.exists() or out.is_symlink() or any(side.exists() for side in sides)
    if taken and not config.overwrite:
        raise InputError(f"manifest {out} (or one of its side files) already exists: pass --overwrite to replace it, "
                         "or --out another file")
    if taken and config.overwrite and (out.is_symlink() or (out.exists() and not out.is_file())
                                       or not sidecar(out, "meta.json").is_file()):
        raise InputError(f"--overwrite replaces only an oodfilter manifest, and {out} is not one (no "
                         f"{sidecar(out, 'meta.json').name} beside it, or not a file); choose another --out")


def _review(config: ApplyConfig, source: Path, rows: list[ManifestRow]) -> Review | None:
    if not config.review:
        return None
    review = load_review(config.review)
    check_review(review, source, {row.path for row in rows})
    return review


def _files_as_of(source: Path, meta: dict[str, Any]) -> int | None:
    """When the scan read its files (ns): recorded by an earlier apply, else when the scan wrote its meta."""
    recorded = meta.get("files_as_of")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded
    for path in (sidecar(source, "meta.json"), source):
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            continue
    return None


def _input_roots(source: Path, meta: dict[str, Any], base: str) -> list[str] | None:
    """Return the folders the scan read (absolute): destinations keep each file's path below its folder, as a scan's do.

    From the applied manifest's meta (``input_roots``), else the scan's recorded inputs (its
    ``config.yaml``), else those of the manifest it was rescored from; None when no record says.
    """
    seen: set[Path] = set()
    while real_path(source) not in seen:
        seen.add(real_path(source))
        recorded = meta.get("input_roots")
        if isinstance(recorded, list) and recorded and all(isinstance(p, str) and os.path.isabs(p) for p in recorded):
            return [os.path.normpath(p) for p in recorded]
        roots = [root for text in _scan_inputs(source) if (root := _root_of_input(text, base)) is not None]
        if roots:
            return sorted(set(roots))
        earlier = meta.get("rescored_from")
        if not isinstance(earlier, str) or not earlier or not sidecar(earlier, "meta.json").is_file():
            return None
        source = Path(earlier)
        try:
            meta = read_meta(source)
        except InputError:
            return None
        base = manifest_base(source, meta)
    return None


def _scan_inputs(source: Path) -> list[str]:
    """Return the inputs the scan named, from its ``config.yaml`` (empty when there is none or it cannot be used)."""
    path = sidecar(source, "config.yaml")
    try:
        recorded = load_yaml(path.read_text(encoding="utf-8"), str(path))
    # a missing or damaged file (not UTF-8, not YAML, aliases that explode): fall back to the rows' folder
    except (OSError, ValueError, RecursionError, YamlAliasError, yaml.YAMLError):
        return []
    inputs = recorded.get("inputs") if isinstance(recorded, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(text, str) and text and "\0" not in text for text in inputs):
        return []
    return inputs


def _root_of_input(text: str, base: str) -> str | None:
    """Return the folder a scan input names (a folder; a file's parent; a glob's fixed part), resolved from ``base``."""
    if is_url(text):
        return None
    path = resolve_row_path(os.path.expanduser(text), base)
    if os.path.isdir(path):
        return path
    if os.path.lexists(path):
        return os.path.dirname(path)
    if _GLOB_CHARS & set(text):
        fixed: list[str] = []
        for part in Path(text).parts:
            if _GLOB_CHARS & set(part):
                break
            fixed.append(part)
        return resolve_row_path(os.path.expanduser(str(Path(*fixed))) if fixed else ".", base)
    return None


def _root_of(path: str, roots: list[str]) -> str:
    """Return the deepest of ``roots`` that holds ``path`` (its own folder when none does)."""
    holding = [root for root in roots if path != root and Path(path).is_relative_to(root)]
    return max(holding, key=len) if holding else os.path.dirname(path)


def _check_action(config: ApplyConfig, source: Path, rows: list[ManifestRow], resolved: list[str],
                  recorded: list[str] | None) -> None:
    """Refuse an action the scan would refuse: non-local rows, rows outside the folders it read, a bad destination."""
    if config.action == RESHARD:
        plan_reshard([path for row, path in zip(rows, resolved, strict=True)
                      if row.ok or split_sample_name(path) is not None], str(config.dest))
        return
    if config.action not in FILE_ACTIONS:
        return
    remote = next((path for path in resolved if is_url(path) or split_sample_name(path) is not None), None)
    if remote is not None:
        raise InputError(f"--action {config.action} works on local image files only, and {remote} is not one (a URL "
                         "or a shard's sample); use --action list or tag and act on the manifest, or --action "
                         "reshard --dest DIR to write shards without the selected samples")
    roots = _check_inside_inputs(config, source, rows, resolved, recorded)
    dest = str(config.dest)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise InputError(f"--dest {dest} is not a folder (a file, or a symbolic link that leads nowhere: a loop or a "
                         "broken link); choose a folder")
    where = real_path(dest)
    for root in sorted({real_path(root) for root in roots}):
        if where == root or where.is_relative_to(root):
            raise InputError(f"--dest {dest} is inside the scanned folder {root}; choose a folder outside it so a "
                             "later scan does not pick up the moved files")


def _check_inside_inputs(config: ApplyConfig, source: Path, rows: list[ManifestRow], resolved: list[str],
                         recorded: list[str] | None) -> list[str]:
    """Refuse to act on a row that lies outside the folders the scan read (a manifest edited by hand).

    Each row's folder is resolved (``..`` and symbolic links) and compared with the resolved roots; the
    row's own name is kept, as the action moves the name the scan read (a link, not what it leads to).
    """
    if recorded is None:
        raise InputError(f"manifest {source} does not record which folders the scan read (no "
                         f"{sidecar(source, 'config.yaml').name} beside it, nor input_roots in its meta), so --action "
                         f"{config.action} cannot check that its rows are files the scan read; scan the folders again "
                         "with --action, or use --action list and act on the listed paths yourself")
    roots = sorted({real_path(root) for root in recorded})
    for row, path in zip(rows, resolved, strict=True):
        where = real_path(os.path.dirname(path)) / os.path.basename(path)
        if not any(where != root and where.is_relative_to(root) for root in roots):
            raise InputError(f"manifest {source} has a row outside the folders the scan read "
                             f"({', '.join(map(str, roots))}): {row.path}; apply acts only on files the scan read, "
                             "so remove that row (or scan its folder and apply to that manifest)")
    return recorded


def _check_shards_unchanged(source: Path, changed: list[str], missing: list[str], base: str) -> None:
    """Refuse to reshard shards that changed or went missing since the scan: its rows no longer describe them.

    A replaced shard's samples were not scored (a reshard would keep them all as unscanned, or write an
    empty shard), and a missing one cannot be read, so nothing is written until they are scanned again.
    """
    problems = []
    for rows, how in ((changed, "changed since the scan"), (missing, "missing since the scan")):
        shards = sorted({parts[0] for path in rows if (parts := split_sample_name(resolve_row_path(path, base)))})
        if shards:
            problems.append(f"{len(shards)} shard(s) {how} (first: {shards[0]})")
    if problems:
        raise InputError(f"--action reshard: of the shards manifest {source} scored, {' and '.join(problems)}, so "
                         "its scores do not describe their samples and nothing was written; scan those shards again")


def _check_decided(config: ApplyConfig, rows: list[ManifestRow]) -> None:
    undecided = [row.path for row in rows if row.ok and row.is_ood is None]
    if undecided:
        raise InputError(f"{len(undecided)} rows (e.g. {undecided[0]}) have no decision, so --action {config.action} "
                         "cannot tell whether to take them; pass --threshold, --calibration, --id-recall, "
                         "--keep-fraction, a --review with a threshold, or --review FILE --only-marked to act on "
                         "the marked rows alone")


def _act(config: ApplyConfig, summary: ApplySummary, rows: list[ManifestRow], resolved: list[str],
         roots: list[str], journal: Path | None) -> None:
    """Carry out (or, without a journal: plan) the action on the selected rows."""
    select_ood = config.select == "ood"
    if config.action == RESHARD:  # with --only-marked an undecided sample is not selected: its shard keeps it
        named = [replace(row, path=path, is_ood=(not select_ood) if config.only_marked and row.ok and row.is_ood is None
                         else row.is_ood) for row, path in zip(rows, resolved, strict=True)]
        samples = [row.path for row in named if row.ok or split_sample_name(row.path) is not None]
        summary.resharded = reshard_rows(named, samples, str(config.dest), select_ood=select_ood,
                                         dry_run=journal is None)
        return
    if config.action not in FILE_ACTIONS:
        return
    chosen = {path for row, path in zip(rows, resolved, strict=True) if row.ok and row.is_ood is select_ood}
    pairs = [(Path(path), Path(path).relative_to(_root_of(path, roots))) for path in resolved if path in chosen]
    planned = plan_actions(config.action, pairs, Path(str(config.dest)))
    if journal is None:
        summary.planned = planned
    else:
        summary.actions = apply_actions(planned, journal)


def _new_meta(config: ApplyConfig, meta: dict[str, Any], decision: dict[str, Any], base: str, roots: list[str],
              review: Review | None) -> dict[str, Any]:
    """Return the new manifest's meta: the source's (model, method, class list, ...) with the applied decision."""
    kept = {key: value for key, value in meta.items() if key not in DECISION_KEYS}
    described = None
    if review is not None:
        described = {"file": str(real_path(review.path)), "sha256": review.sha256, "threshold": review.threshold,
                     **{f"marked_{mark}": count for mark, count in review.counts().items()}}
    return {**kept, **decision, "oodfilter_version": __version__, "cwd": base,
            "applied_from": str(real_path(config.manifest)), "applied_from_sha256": file_sha256(config.manifest),
            "review": described, "input_roots": roots}


def _write(out: Path, rows: list[ManifestRow], meta: dict[str, Any], calibration: Calibration | None) -> None:
    """Write the new manifest, its meta and calibration; drop side files of a replaced manifest that no longer hold."""
    remove_features(out)  # the replaced manifest's stored features belong to no row of this one
    sidecar(out, "calibration.json").unlink(missing_ok=True)
    rewrite_manifest(out, rows)
    atomic_write_text(sidecar(out, "meta.json"), json.dumps(meta, indent=2))
    if calibration is not None:
        calibration.save(sidecar(out, "calibration.json"))
