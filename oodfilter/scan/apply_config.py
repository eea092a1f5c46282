"""What ``oodfilter apply`` takes: a scanned manifest, a decision and an action (no model, no scoring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from oodfilter.errors import InputError
from oodfilter.scan.config import check_decision_options
from oodfilter.sinks.actions import ACTIONS
from oodfilter.sinks.manifest import manifest_format
from oodfilter.sinks.reshard import RESHARD

LIST = "list"
APPLY_ACTIONS = (*ACTIONS, RESHARD, LIST)


@dataclass
class ApplyConfig:
    """A decision and an action to apply to an existing manifest; see ``oodfilter apply --help``.

    Attributes:
        manifest: The manifest a scan (or rescore, or apply) wrote.
        out: The new manifest (default ``<manifest stem>.applied<suffix>`` beside the source).
        threshold: Decide OOD as ``ood_score > threshold``.
        calibration: Decide with a saved calibration file (it must fit the manifest's scores).
        keep_fraction: Keep this share of the manifest's ok rows, the lowest-scored.
        id_recall: Fit a threshold keeping this share of the ``calibrate_on`` rows' scores.
        calibrate_on: Manifests of images known to be in-distribution, scanned with the same model,
            class list, templates, method and precision (their stored scores are used; nothing is scored).
        review: A review file exported by the report: its marks override every other decision, and its
            threshold (when the reviewer moved the slider) decides the unmarked rows.
        only_marked: Decide only the rows the review marks; the others get no decision and are left alone
            (so an action takes exactly the marked files).
        action: tag (only the new manifest), move, copy, link, reshard, or list (print the selected paths).
        select: Which rows the action takes: ``ood`` or ``id``.
        dest: The folder for move, copy, link and reshard.
        dry_run: Print what would be done; write nothing at all.
        overwrite: Replace an existing manifest of ours at ``out``.

    """

    manifest: str = ""
    out: str | None = None
    threshold: float | None = None
    calibration: str | None = None
    keep_fraction: float | None = None
    id_recall: float | None = None
    calibrate_on: list[str] = field(default_factory=list)
    review: str | None = None
    only_marked: bool = False
    action: str = "tag"
    select: str = "ood"
    dest: str | None = None
    dry_run: bool = False
    overwrite: bool = False

    @property
    def out_path(self) -> Path:
        """The new manifest: ``out``, else ``<manifest stem>.applied<suffix>`` beside the source."""
        if self.out:
            return Path(self.out)
        source = Path(self.manifest)
        return source.with_name(f"{source.stem}.applied{source.suffix}")

    def validate(self) -> None:
        """Check values that do not depend on files.

        Raises:
            InputError: a value out of range, or options that contradict each other.

        """
        if not self.manifest:
            raise InputError("name the manifest to apply a decision to (one that oodfilter scan wrote)")
        manifest_format(self.manifest)
        manifest_format(self.out_path)
        if self.action not in APPLY_ACTIONS:
            raise InputError(f"--action must be one of {', '.join(APPLY_ACTIONS)}, got '{self.action}'")
        if self.select not in ("ood", "id"):
            raise InputError(f"--select must be 'ood' or 'id', got '{self.select}'")
        if self.action in ("move", "copy", "link", RESHARD) and not self.dest:
            raise InputError(f"--action {self.action} needs --dest DIR, the folder the "
                             f"{'filtered shards' if self.action == RESHARD else 'files'} go to")
        if self.dest and self.action not in ("move", "copy", "link", RESHARD):
            raise InputError(f"--dest is for --action move, copy, link or reshard, not {self.action}")
        if self.threshold is not None and (isinstance(self.threshold, bool) or not math.isfinite(self.threshold)):
            raise InputError(f"--threshold must be a finite number, got {self.threshold}")
        check_decision_options(self.threshold, self.id_recall, self.calibrate_on, self.calibration,
                               self.keep_fraction)
        if self.only_marked and not self.review:
            raise InputError("--only-marked decides the rows a --review file marks; pass --review FILE")
        given = [name for name, value in (("--threshold", self.threshold), ("--calibration", self.calibration),
                                          ("--id-recall", self.id_recall), ("--keep-fraction", self.keep_fraction))
                 if value is not None]
        if self.only_marked and given:
            raise InputError(f"--only-marked decides by the review's marks alone, so {given[0]} would decide nothing; "
                             "drop one of them")
