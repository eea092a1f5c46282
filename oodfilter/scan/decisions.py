"""How a scan decides: a fixed threshold, a calibrated one (``--id-recall``), or ``--keep-fraction``.

A calibrated threshold is fitted before scoring, on images the user knows are in-distribution
(``--calibrate-on``: files, folders, globs or an oodfilter manifest, whose ok rows' paths are used), and
saved beside the manifest (``<out>.calibration.json``); a resumed scan reuses it when the recall and the
calibration files are the same, and refuses otherwise. ``--keep-fraction`` needs every score of the scan,
so rows are written undecided while scoring and decided after it, before any file action.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import score_identity
from oodfilter.decision.keep_fraction import keep_fraction_decisions
from oodfilter.errors import InputError
from oodfilter.scan.config import ScanConfig
from oodfilter.scan.decision_rule import calibration_paths
from oodfilter.scoring.calibrate import calibrate
from oodfilter.scoring.scorer import Scorer
from oodfilter.sinks.manifest import read_manifest, rewrite_manifest, sidecar
from oodfilter.sinks.rows import ManifestRow


@dataclass
class DecisionPlan:
    """The decision rule of a scan, resolved.

    Attributes:
        threshold: The fixed threshold rows are decided with while scoring (given or calibrated), or None.
        rule: What the user asked for, compared on resume (threshold, recall and calibration files, ...).
        calibration: The calibration in use, if any.
        keep_fraction: Decide after scoring, keeping this share (rows are undecided until then).

    """

    threshold: float | None
    rule: dict[str, Any]
    calibration: Calibration | None = None
    keep_fraction: float | None = None

    def meta(self) -> dict[str, Any]:
        """Return the manifest meta keys of this rule."""
        calibration = None
        if self.calibration is not None:
            c = self.calibration
            calibration = {"id_recall": c.id_recall, "threshold": c.threshold, "num_images": c.num_images,
                           "kept": c.kept, "source": c.source}
        return {"threshold": self.threshold, "decision_rule": self.rule, "calibration": calibration,
                "keep_fraction": self.keep_fraction}

    def describe(self, method: str, threshold_free: bool) -> str | None:
        """Describe the decision in words, for the manifest meta and the report."""
        if self.keep_fraction is not None:
            return (f"keep the {self.keep_fraction:.0%} lowest-scored (most in-distribution) images of the scan "
                    "(F·N rounded half up)")
        if self.calibration is not None:
            c = self.calibration
            return (f"ood_score > {c.threshold:.6g} (calibrated to keep {c.id_recall:.0%} of {c.num_images} "
                    f"known in-distribution images)")
        if self.threshold is not None:
            return f"ood_score > {self.threshold}"
        return f"{method} threshold-free rule" if threshold_free else None


def plan_decisions(config: ScanConfig, scorer: Scorer, rule: dict[str, Any],
                   previous_meta: dict[str, Any] | None, inputs: set[str]) -> DecisionPlan:
    """Resolve the scan's decision rule; fit (or, on a resume with the same rule, reuse) a calibration.

    Call it only after a resume was accepted (so a refused resume changes no file). The calibration in
    use is written beside the manifest (``<out>.calibration.json``), also for ``--calibration FILE``, so
    the report shows it.

    Args:
        config: The scan configuration.
        scorer: The scan's scorer (its threshold is not changed here).
        rule: :func:`decision_rule` of ``config``.
        previous_meta: The meta of the manifest being resumed, or None.
        inputs: The scan's input paths (a calibration set made only of them is warned about).

    Raises:
        InputError: a calibration that does not fit the scorer, too few calibration images, or a
            calibration file that cannot be read or no longer matches the manifest it belongs to.

    """
    stored = sidecar(config.out, "calibration.json")
    if config.keep_fraction is not None:
        stored.unlink(missing_ok=True)  # a calibration of an earlier scan into this --out no longer applies
        return DecisionPlan(None, rule, keep_fraction=config.keep_fraction)
    identity = score_identity(scorer)
    reused = False
    if config.calibration:
        calibration = Calibration.load(config.calibration)
        calibration.check_fits(scorer.method.name, identity, where=f"calibration file {config.calibration}")
    elif config.id_recall is not None:
        if previous_meta is not None and stored.is_file():
            calibration = Calibration.load(stored)
            calibration.check_fits(scorer.method.name, identity, where=f"{stored}")
            if calibration.threshold != previous_meta.get("threshold") or calibration.id_recall != config.id_recall:
                raise InputError(f"cannot resume {config.out}: {stored.name} no longer holds the threshold its rows "
                                 "were decided with; --overwrite (or another --out) to scan again")
            reused = True
        else:
            paths = calibration_paths(config.calibrate_on)
            if inputs.issuperset(os.path.abspath(path) for path in paths):
                warnings.warn("every --calibrate-on image is also a scanned input: --id-recall then keeps about that "
                              "share of them whatever they contain; calibrate on images you know are "
                              "in-distribution", stacklevel=3)
            calibration = calibrate(scorer, paths, config.id_recall, workers=config.workers,
                                    max_pixels=config.max_pixels, source=" ".join(config.calibrate_on),
                                    fast_decode=config.fast_decode)
    else:
        stored.unlink(missing_ok=True)
        return DecisionPlan(config.threshold, rule)
    if not reused:
        calibration.save(stored)
    return DecisionPlan(calibration.threshold, rule, calibration=calibration)


def undecided(rows: list[ManifestRow]) -> list[ManifestRow]:
    """Return ``rows`` without decisions (``--keep-fraction`` decides after scoring)."""
    return [replace(row, is_ood=None) for row in rows]


def decide_keep_fraction(out: Path, keep_fraction: float) -> float | None:
    """Decide every ok row of the manifest by rank and rewrite it atomically; return the highest kept score.

    Rows are ranked by score, ties by manifest order, so the kept count is exactly ``round(F N)`` of the N
    ok rows; error rows stay undecided.
    """
    rows = read_manifest(out)  # for Parquet, with any rows a crash left in its partial journal
    ok = [i for i, row in enumerate(rows) if row.ok]
    is_ood, boundary = keep_fraction_decisions(torch.tensor([rows[i].score for i in ok], dtype=torch.float64),
                                               keep_fraction)
    for position, index in enumerate(ok):
        rows[index] = replace(rows[index], is_ood=bool(is_ood[position]))
    rewrite_manifest(out, rows)
    return boundary
