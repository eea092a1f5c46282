"""Scan configuration: defaults < YAML file < explicit arguments (the CLI's flags)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodfilter.config import ModelOptions, build_config
from oodfilter.data.decode import DEFAULT_MAX_PIXELS
from oodfilter.errors import InputError
from oodfilter.sinks.actions import ACTIONS
from oodfilter.sinks.reshard import RESHARD
from oodfilter.text.templates import DEFAULT_TEMPLATES

SCAN_ACTIONS = (*ACTIONS, RESHARD)
ENGINES = ("local", "ray")


def _default_workers() -> int:
    """Return the default number of decoding processes: none on two cores or fewer, else cores - 1 (at most 8).

    Measured on 2 cores (ViT-B-32, benchmarks/scan_throughput.py): a decoding process beside a forward
    pass that uses both cores slows it more than it saves: bf16 scan 80-89 img/s with 1 worker (and with
    it at the lowest priority), 108-111 decoding in the scoring process; fp32 0.95x the forward rate with
    1 worker, 1.02x without.
    """
    cores = os.cpu_count() or 2
    return 0 if cores <= 2 else min(8, cores - 1)


@dataclass
class ScanConfig(ModelOptions):
    """Everything a scan needs. Paths are kept as given; see ``oodfilter scan --help`` for each field.

    The model options (model, pretrained, device, precision, batch_size) come from
    :class:`~oodfilter.config.ModelOptions`.
    """

    inputs: list[str] = field(default_factory=list)
    classes: str | list[str] = ""
    classes_from_folders: bool = False
    label_min_prob: float = 0.5
    out: str = "oodfilter-scan.jsonl"
    model: str = "clipn-vitb16"  # the reference CLIPN weights, fetched on first use (oodfilter models)
    method: str | None = None
    threshold: float | None = None
    id_recall: float | None = None
    calibrate_on: list[str] = field(default_factory=list)
    calibration: str | None = None
    keep_fraction: float | None = None
    reference: list[str] = field(default_factory=list)
    save_features: bool = False
    templates: str | list[str] = DEFAULT_TEMPLATES
    workers: int = field(default_factory=_default_workers)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    recursive: bool = True
    resume: bool = False
    overwrite: bool = False
    action: str = "tag"
    select: str = "ood"
    dest: str | None = None
    dry_run: bool = False
    cache_dir: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    fast_decode: bool = False
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None

    def validate(self) -> None:
        """Check values that do not depend on files or the model.

        Raises:
            InputError: a value is out of range or options contradict each other.

        """
        if not self.inputs:
            raise InputError("no inputs: pass image files, folders or glob patterns to scan")
        if self.classes_from_folders and self.classes:
            raise InputError("--classes and --classes-from-folders each set the class list; pick one")
        if not self.classes and not self.classes_from_folders:
            raise InputError("no class list: pass --classes FILE (one in-distribution class per line), or "
                             "--classes-from-folders for a folder whose sub-folders name the classes")
        if not (0.5 <= self.label_min_prob < 1.0):
            raise InputError(f"--label-min-prob must be in [0.5, 1) (from 0.5 the other class is more likely than "
                             f"the folder's), got {self.label_min_prob}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise InputError(f"--workers must be 0 or more, got {self.workers}")
        if self.max_pixels < 1:
            raise InputError(f"max_pixels must be at least 1 (the most pixels an image may have; default "
                             f"{DEFAULT_MAX_PIXELS}), got {self.max_pixels}")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise InputError(f"--ray-actors must be at least 1, got {self.ray_actors}")
        if self.action not in SCAN_ACTIONS:
            raise InputError(f"--action must be one of {', '.join(SCAN_ACTIONS)}, got '{self.action}'")
        if self.select not in ("ood", "id"):
            raise InputError(f"--select must be 'ood' or 'id', got '{self.select}'")
        if self.action != "tag" and not self.dest:
            raise InputError(f"--action {self.action} needs --dest DIR, the folder the "
                             f"{'filtered shards' if self.action == RESHARD else 'files'} go to")
        if self.engine not in ENGINES:
            raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got '{self.engine}'")
        if self.resume and self.overwrite:
            raise InputError("--resume and --overwrite contradict each other; pick one")
        if self.threshold is not None and not math.isfinite(self.threshold):  # the meta.json could not hold it
            raise InputError(f"--threshold must be a finite number, got {self.threshold}")
        self._validate_decision_rule()

    def _validate_decision_rule(self) -> None:
        check_decision_options(self.threshold, self.id_recall, self.calibrate_on, self.calibration,
                               self.keep_fraction)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data (for the resolved-config file)."""
        return dataclasses.asdict(self)


def check_decision_options(threshold: float | None, id_recall: float | None, calibrate_on: list[str],
                           calibration: str | None, keep_fraction: float | None) -> None:
    """Refuse decision options that contradict each other or are out of range (scan and rescore share them).

    Raises:
        InputError: two options that each set the decision, a recall or fraction outside (0, 1], or
            ``--id-recall`` and ``--calibrate-on`` without each other.

    """
    rules = [name for name, value in (("--threshold", threshold), ("--id-recall", id_recall),
                                      ("--calibration", calibration), ("--keep-fraction", keep_fraction))
             if value is not None]
    if len(rules) > 1:
        raise InputError(f"{' and '.join(rules)} each set the decision; pick one")
    if id_recall is not None and not (0.0 < id_recall <= 1.0):
        raise InputError(f"--id-recall must be in (0, 1] (0.95 keeps 95% of in-distribution images), got {id_recall}")
    if id_recall is not None and not calibrate_on:
        raise InputError("--id-recall needs --calibrate-on ID_IMAGES: a folder, glob or manifest of images you "
                         "know are in-distribution (unlabelled)")
    if calibrate_on and id_recall is None:
        raise InputError("--calibrate-on is used with --id-recall R (the share of those images to keep)")
    if keep_fraction is not None and not (0.0 < keep_fraction <= 1.0):
        raise InputError(f"--keep-fraction must be in (0, 1] (0.7 keeps the 70% most in-distribution images), "
                         f"got {keep_fraction}")


def load_scan_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ScanConfig:
    """Build a :class:`ScanConfig` from defaults, then a YAML file, then ``overrides``.

    Raises:
        InputError: the YAML file is unreadable, not a mapping, names unknown keys, or holds a value
            its option's type cannot take.
    """
    return build_config(ScanConfig, path, overrides)
