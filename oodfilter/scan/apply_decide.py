"""The decisions ``oodfilter apply`` gives a manifest's rows, from their stored scores (nothing is scored).

Each ok row is decided by, in this order: a review file's mark ("drop": OOD, "keep": in-distribution);
else the review's threshold (when the reviewer moved the slider); else apply's own decision option
(``--threshold``, ``--calibration``, ``--id-recall`` on manifests of known-ID images, ``--keep-fraction``);
else the decision the manifest already holds. Error rows are left as they are. A row whose file was
modified after the scan read it (a later mtime), or deleted since, becomes an error row: its score is not
the file's any more.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oodfilter.data.remote import is_url
from oodfilter.data.shards import split_sample_name
from oodfilter.decision.calibration import Calibration
from oodfilter.decision.keep_fraction import keep_fraction_flags
from oodfilter.decision.review import Review
from oodfilter.errors import InputError
from oodfilter.real_path import real_path
from oodfilter.scan.apply_config import ApplyConfig
from oodfilter.sinks.manifest import FORMATS, read_manifest, read_meta, sidecar
from oodfilter.sinks.rows import ManifestRow
from oodfilter.text.templates import TEMPLATE_SETS, templates_digest

# Meta keys that say how a manifest's rows were decided: replaced in an applied manifest's meta.
DECISION_KEYS = ("threshold", "decision_rule", "calibration", "keep_fraction", "keep_boundary", "decision")
# What a calibration manifest's scores must share with the applied manifest's for its threshold to hold.
_SCORE_KEYS = {"method": "method", "fingerprints": "model", "classes_sha256": "class list",
               "templates_sha256": "prompt templates", "precision": "precision",
               "decode": "decoding (--fast-decode or not)"}
CHANGED = ("changed since the scan (modified or replaced after its manifest was written), so its score is not this "
           "file's; scan it again")
MISSING = "missing since the scan (deleted or moved after its manifest was written), so nothing was done with it"


@dataclass
class Decided:
    """The applied rows and what decided them.

    Attributes:
        rows: The new rows, in the source's order.
        meta: The decision keys of the new manifest's meta (:data:`DECISION_KEYS`).
        calibration: The calibration in use (saved beside the new manifest), or None.
        changed: Paths of the rows made error rows because their file changed since the scan.
        ignored_marks: Marks on error rows (left as they are).
        missing: Paths of the rows made error rows because their file is gone since the scan.

    """

    rows: list[ManifestRow]
    meta: dict[str, Any]
    calibration: Calibration | None
    changed: list[str]
    ignored_marks: list[str]
    missing: list[str] = field(default_factory=list)


def decide_rows(config: ApplyConfig, rows: list[ManifestRow], meta: dict[str, Any], review: Review | None,
                resolved: list[str], files_as_of: int | None) -> Decided:
    """Return ``rows`` decided as ``config`` and ``review`` say (see the module docstring).

    Args:
        config: The apply configuration (already validated).
        rows: The source manifest's rows.
        meta: The source manifest's meta.
        review: The review file, checked against the manifest, or None.
        resolved: Each row's resolved path (:func:`~oodfilter.sinks.row_paths.resolve_row_path`).
        files_as_of: Nanoseconds since the epoch when the scan read its files; a local file modified or
            replaced after it, or gone, makes its row an error row (None: no check).

    Raises:
        InputError: a calibration that does not fit the manifest's scores, or ``--calibrate-on`` that is
            not a manifest of the same scores.

    """
    changed: list[str] = []
    missing: list[str] = []
    new: list[ManifestRow] = []
    for row, path in zip(rows, resolved, strict=True):
        state = _since_scan(path, files_as_of) if row.ok and files_as_of is not None else None
        if state is not None:
            (changed if state == "changed" else missing).append(row.path)
            new.append(ManifestRow(row.path, "error", error=CHANGED if state == "changed" else MISSING))
        else:
            new.append(row)
    ok = [index for index, row in enumerate(new) if row.ok]
    if config.only_marked:  # only the marks decide: every other row is left undecided, and no action takes it
        if review is not None and review.threshold is not None:
            warnings.warn(f"the review file {review.path} sets a threshold ({review.threshold:g}, moved on its "
                          "slider), not used: --only-marked decides the marked rows alone", stacklevel=3)
        threshold, calibration = None, None
        decision_meta = _meta(None, {"review_marks_only": True}, "")
        for index in ok:
            new[index] = replace(new[index], is_ood=None)
    else:
        threshold, decision_meta, calibration = _base_rule(config, meta, review)
    if config.keep_fraction is not None and (review is None or review.threshold is None):
        flags, boundary = keep_fraction_flags([new[i].score for i in ok], config.keep_fraction)
        for position, index in enumerate(ok):
            new[index] = replace(new[index], is_ood=bool(flags[position]))
        decision_meta["keep_boundary"] = boundary
    elif threshold is not None:
        for index in ok:
            new[index] = replace(new[index], is_ood=new[index].score > threshold)
    ignored: list[str] = []
    if review is not None:
        for index, row in enumerate(new):
            mark = review.marks.get(row.path)
            if mark is None:
                continue
            if not row.ok:
                ignored.append(row.path)
                continue
            new[index] = replace(row, is_ood=mark == "drop")
        decision_meta["decision"] = _with_marks(decision_meta.get("decision"), review, config.only_marked)
    return Decided(new, decision_meta, calibration, changed, ignored, missing)


def _since_scan(path: str, moment: int) -> str | None:
    """Return "changed" when the local file (or shard) ``path`` names changed after ``moment`` (ns); "missing": gone.

    Only the mtime counts. The ctime would also catch another file put in place with an old mtime
    (``cp -p``, ``rsync -t``, ``tar``), but every rename moves it on: the files ``oodfilter undo`` put back
    (byte for byte the scanned ones) would all read as changed, and the README's own flow (scan, move,
    undo, apply) would fail. A file replaced with an older mtime is not detected: scan it again.
    """
    if is_url(path):
        return None
    parts = split_sample_name(path)
    target = parts[0] if parts is not None else path
    try:
        status = os.stat(target)
    except FileNotFoundError:
        return "missing"
    except OSError:  # a link loop, a path through a file: the scan made such a row an error row
        return None
    return "changed" if status.st_mtime_ns > moment else None


def _base_rule(config: ApplyConfig, meta: dict[str, Any],
               review: Review | None) -> tuple[float | None, dict[str, Any], Calibration | None]:
    """Return the threshold unmarked rows are decided with (None: keep fraction or the stored decision)."""
    own = [name for name, value in (("--threshold", config.threshold), ("--calibration", config.calibration),
                                    ("--id-recall", config.id_recall), ("--keep-fraction", config.keep_fraction))
           if value is not None]
    if review is not None and review.threshold is not None:
        if own:
            warnings.warn(f"{' and '.join(own)} not used: the review file {review.path} sets the threshold "
                          f"({review.threshold:g}, moved on its slider) for the rows it does not mark", stacklevel=3)
        return review.threshold, _meta(review.threshold, {"review_threshold": review.threshold},
                                       f"ood_score > {review.threshold:g} (the review's threshold)"), None
    if config.threshold is not None:
        return config.threshold, _meta(config.threshold, {"threshold": config.threshold},
                                       f"ood_score > {config.threshold}"), None
    if config.keep_fraction is not None:
        described = (f"keep the {config.keep_fraction:.0%} lowest-scored (most in-distribution) images of the scan "
                     "(F·N rounded half up)")
        return None, {**_meta(None, {"keep_fraction": config.keep_fraction}, described),
                      "keep_fraction": config.keep_fraction}, None
    if config.calibration is not None:
        calibration = Calibration.load(config.calibration)
        check_calibration_fits(calibration, meta, f"calibration file {config.calibration}")
        rule: dict[str, Any] = {"calibration": str(real_path(config.calibration))}
    elif config.id_recall is not None:
        calibration = fit_from_manifests(config, meta)
        rule = {"id_recall": config.id_recall, "calibrate_on": [str(real_path(item)) for item in config.calibrate_on]}
    else:  # the manifest's own decisions
        return None, {key: meta.get(key) for key in DECISION_KEYS if key in meta}, None
    c = calibration
    described = (f"ood_score > {c.threshold:.6g} (calibrated to keep {c.id_recall:.0%} of {c.num_images} known "
                 "in-distribution images)")
    return c.threshold, {**_meta(c.threshold, rule, described), "calibration": {
        "id_recall": c.id_recall, "threshold": c.threshold, "num_images": c.num_images, "kept": c.kept,
        "source": c.source}}, c


def _meta(threshold: float | None, rule: dict[str, Any], described: str) -> dict[str, Any]:
    return {"threshold": threshold, "decision_rule": rule, "calibration": None, "keep_fraction": None,
            "decision": described}


def _with_marks(described: Any, review: Review, only_marked: bool) -> str:
    counts = review.counts()
    marks = f"review {review.path.name}'s marks ({counts['drop']} drop, {counts['keep']} keep)"
    if only_marked:
        return f"{marks}; no other row decided (--only-marked)"
    base = described if isinstance(described, str) and described else "the manifest's decisions"
    return f"{base}; {marks}"


def check_calibration_fits(calibration: Calibration, meta: dict[str, Any], where: str) -> None:
    """Refuse a calibration fitted on other scores than the manifest's (method, model, classes, templates, precision).

    Raises:
        InputError: naming what differs.

    """
    templates = list(calibration.identity.get("templates", []))
    if templates_digest(templates) != meta.get("templates_sha256"):
        templates = ["(other templates)"]
    identity = {"fingerprints": meta.get("fingerprints") or {}, "classes_sha256": meta.get("classes_sha256"),
                "templates": templates, "precision": meta.get("precision")}
    calibration.check_fits(str(meta.get("method")), identity, where=where)


def fit_from_manifests(config: ApplyConfig, meta: dict[str, Any]) -> Calibration:
    """Fit ``--id-recall`` on the stored scores of the ``--calibrate-on`` manifests (which must share the scores).

    Raises:
        InputError: an item that is not a manifest, a manifest of other scores, or too few scores.

    """
    source = real_path(config.manifest)
    scores: list[float] = []
    for item in config.calibrate_on:
        if Path(item).suffix.lower() not in FORMATS or not sidecar(item, "meta.json").is_file():
            raise InputError(f"--calibrate-on {item}: apply scores no image, so --calibrate-on must name manifests of "
                             "known in-distribution images scanned with the same model, class list, templates and "
                             "method (oodfilter scan ID_FOLDER --out id.jsonl ...); or calibrate in the scan")
        theirs = read_meta(item)
        different = [word for key, word in _SCORE_KEYS.items() if theirs.get(key) != meta.get(key)]
        if different:
            raise InputError(f"--calibrate-on {item} was scored with a different {', '.join(different)} than "
                             f"{config.manifest}, so its scores say nothing about this threshold; scan the known "
                             "in-distribution images with the same settings")
        if real_path(item) == source:
            warnings.warn("--calibrate-on includes the manifest being applied: --id-recall then keeps about that "
                          "share of it whatever it holds; calibrate on images you know are in-distribution",
                          stacklevel=4)
        scores += [row.score for row in read_manifest(item) if row.ok]
    identity = {"fingerprints": dict(meta.get("fingerprints") or {}), "classes_sha256": meta.get("classes_sha256"),
                "templates": _templates(meta), "precision": meta.get("precision")}
    return Calibration.fit(scores, float(config.id_recall or 0.0), method=str(meta.get("method")), identity=identity,
                           source=f"{len(scores)} images from {' '.join(config.calibrate_on)}")


def _templates(meta: dict[str, Any]) -> list[str]:
    """Return the template texts a manifest was scored with, when its meta names them (checked against their digest)."""
    recorded = meta.get("templates")
    texts: Any = TEMPLATE_SETS.get(recorded) if isinstance(recorded, str) else recorded
    if not isinstance(texts, list | tuple) or not all(isinstance(text, str) for text in texts):
        return []
    if templates_digest(list(texts)) != meta.get("templates_sha256"):
        return []
    return list(texts)
