"""Everything a scan checks before the model loads: options, inputs, outputs, class list, method, decision rule.

:func:`prepare_scan` runs every check that needs no model and no scores, and takes the manifest's lock,
held from then until the scan ends. It imports nothing heavy (no torch, open_clip or FAISS), so that
``oodfilter scan`` refuses a bad option or file in a fraction of a second, before torch is imported, and
never after a model load and minutes of text encoding; :func:`oodfilter.scan.scan` runs it first too.
What needs the model (its fingerprints on resume, a calibration's fit to its scores) is checked once it
is loaded, before any image is scored.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from oodfilter.data.discovery import Discovered, DiscoveredFile, discover_images
from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import classes_digest
from oodfilter.errors import InputError
from oodfilter.real_path import real_path
from oodfilter.scan.config import ScanConfig
from oodfilter.scan.decision_rule import decision_rule
from oodfilter.scan.folder_classes import folder_classes, unlabelled_note
from oodfilter.scoring.checks import check_spec
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.lock import ManifestLock
from oodfilter.sinks.manifest import manifest_format, read_meta, sidecar
from oodfilter.sinks.readback import done_paths
from oodfilter.sinks.reshard import RESHARD, plan_reshard
from oodfilter.sinks.row_paths import is_relative_row
from oodfilter.text.templates import TEMPLATE_SETS, templates_digest

# What each setting a resume must share is called in the refusal.
RESUME_WORDS = {
    "fingerprints": "model", "classes_sha256": "class list", "templates_sha256": "prompt templates",
    "decode": "decoding (--fast-decode or not)", "reference_sha256": "reference images (--reference)",
    "label_check": "label check (--classes-from-folders or not)",
    "decision_rule": "threshold or decision rule (--threshold, --id-recall and its --calibrate-on images, "
    "--calibration, --keep-fraction)",
}


@dataclass
class PreparedScan:
    """A scan whose checks passed; its manifest's lock is held until :meth:`close` (or the ``with`` block ends).

    Attributes:
        config: The scan configuration.
        files: The inputs found.
        previous: The meta of the manifest a resumed scan continues (None when not resuming or nothing is there).
        rule: The decision rule the user asked for (:func:`~oodfilter.scan.decision_rule.decision_rule`).
        done: The inputs the resumed manifest already holds (empty when not resuming).
        folder_classes: Each input's folder class (``--classes-from-folders``; inputs directly in the
            folder have none), or None when the class list was given.

    """

    config: ScanConfig
    files: list[Discovered]
    previous: dict[str, Any] | None
    rule: dict[str, Any]
    done: set[str]
    lock: ManifestLock
    folder_classes: dict[str, str] | None = None

    @property
    def out(self) -> Path:
        """The manifest file."""
        return Path(self.config.out)

    def close(self) -> None:
        """Release the manifest's lock."""
        self.lock.__exit__(None, None, None)

    def __enter__(self) -> PreparedScan:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.lock.__exit__(kind, error, trace)  # a failed scan also removes the folders made only for its lock


def prepare_scan(config: ScanConfig, *, model_given: bool = False) -> PreparedScan:
    """Check everything about a scan that needs no model and no scores, and lock its manifest.

    Args:
        config: The scan configuration.
        model_given: The caller brings a loaded model, so ``config.model`` says nothing about the method
            it can run.

    Raises:
        InputError: a bad option or option combination, inputs that are missing or cannot be acted on, an
            output that would replace something (or an input), an unreadable calibration file or
            ``--calibrate-on`` set, a resume whose class list or decision rule differ, or a
            manifest that another scan is writing.
        ClassListError: the class list is missing, unreadable or empty.
        UnknownNameError: an unknown method or template set.

    """
    config.validate()
    lock = ManifestLock(config.out)
    lock.__enter__()
    try:
        return _prepared(config, lock, model_given)
    except BaseException as error:  # refused: the lock file and the folders made for it go
        lock.__exit__(type(error), error, error.__traceback__)
        raise


def _prepared(config: ScanConfig, lock: ManifestLock, model_given: bool) -> PreparedScan:
    out = Path(config.out)
    labelled = folder_classes(config.inputs) if config.classes_from_folders else None
    if labelled is not None:  # the class list is the folders' (recorded as a list in the scan's config.yaml)
        config = replace(config, classes=labelled.class_names)
    files = discover_images(config.inputs, include=config.include, exclude=config.exclude, recursive=config.recursive)
    _check_actions_are_local(config, files)
    _check_dest_outside_inputs(config, files)
    _check_output_is_free(config, out, files)
    manifest_format(out)  # a known suffix (it was refused only when the first rows were written)
    checked = check_spec(scorer_spec(config), model_known=model_given)  # class list, templates, method
    _warn_reference_overlaps_scan(config, files)
    if config.calibration:
        Calibration.load(config.calibration)  # a file that does not parse fails now (its fit: once scores exist)
    previous = previous_meta(config, out)
    rule = decision_rule(config, previous)
    done: set[str] = set()
    if previous is not None:
        _check_resume_settings(config, out, previous, list(checked.class_names or []), rule)
        done = done_paths(out)
        _check_resumed_from_scan_folder(out, previous, done)
    _check_keep_fraction_resume(config, out, any(item.name not in done for item in files))
    by_path = None
    if labelled is not None:
        by_path = {item.name: name for item in files if (name := labelled.class_of(item)) is not None}
        note = unlabelled_note(labelled, files, by_path)
        if note:
            warnings.warn(f"--classes-from-folders: {note}", stacklevel=3)
    return PreparedScan(config, files, previous, rule, done, lock, by_path)


def _warn_reference_overlaps_scan(config: ScanConfig, files: list[Discovered]) -> None:
    """Warn when scanned images are also ``--reference`` images: a fitted method scores them as known ID."""
    if not config.reference:
        return
    from oodfilter.scoring.reference_paths import reference_images

    scanned = {os.path.normpath(os.path.abspath(item.path)) for item in files if isinstance(item, DiscoveredFile)}
    shared = scanned.intersection(reference_images(config.reference))
    if shared:
        warnings.warn(f"{len(shared)} of the {len(scanned)} scanned images are also --reference images (e.g. "
                      f"{min(shared)}): a fitted method scores them as known in-distribution whatever they contain; "
                      "fit on images you know are in-distribution, not on the images you filter", stacklevel=3)


def scorer_spec(config: ScanConfig) -> ScorerSpec:
    """Return the scorer a scan configuration asks for (decisions required when files are moved, copied, linked)."""
    return ScorerSpec(
        model=config.model, classes=config.classes, pretrained=config.pretrained, method=config.method,
        templates=config.templates, threshold=config.threshold,
        require_decisions=config.action != "tag" and not _decides_later(config),
        decisions_for=f"--action {config.action}", device=config.device, precision=config.precision,
        batch_size=config.batch_size, cache_dir=config.cache_dir, reference=tuple(config.reference),
    )


def _decides_later(config: ScanConfig) -> bool:
    """Whether the decision comes from a calibration or a keep fraction rather than the method or --threshold."""
    return any(value is not None for value in (config.id_recall, config.calibration, config.keep_fraction))


def previous_meta(config: ScanConfig, out: Path) -> dict[str, Any] | None:
    """Return the meta of the manifest a resumed scan continues (None when not resuming or nothing is there yet).

    Raises:
        InputError: the manifest exists but its meta file is missing.

    """
    if not config.resume:
        return None
    previous_file = sidecar(out, "meta.json")
    if not previous_file.is_file():
        if out.exists():
            raise InputError(f"cannot resume {out}: its {previous_file.name} is missing, so its settings are unknown")
        return None
    previous = read_meta(out)
    if "decision_rule" not in previous:  # written before decision rules were recorded: only a threshold
        previous["decision_rule"] = {"threshold": previous.get("threshold")}
    if "templates_sha256" not in previous:  # written before templates were recorded by their text
        previous["templates_sha256"] = _legacy_templates_digest(previous.get("templates"))
    return previous


def _legacy_templates_digest(recorded: Any) -> str | None:
    """Return the digest of the templates a manifest from before ``templates_sha256`` names.

    Such a manifest recorded a set's name or the list itself; its ``clipn`` was the quote-stripped set that is
    ``clipn-clean`` now. A name no longer known gives None, which matches nothing.
    """
    if isinstance(recorded, list):
        return templates_digest(recorded) if all(isinstance(item, str) for item in recorded) else None
    name = "clipn-clean" if recorded == "clipn" else recorded
    return templates_digest(TEMPLATE_SETS[name]) if isinstance(name, str) and name in TEMPLATE_SETS else None


def resume_refused(out: Path, different: list[str], words: Mapping[str, str] = RESUME_WORDS) -> InputError:
    """Return the error that refuses to resume ``out`` because the settings ``different`` changed."""
    what = ", ".join(words.get(key, key) for key in different)
    return InputError(f"cannot resume {out}: it was made with a different {what}; use the same settings, "
                      "or --overwrite / another --out to start again")


def _check_resume_settings(config: ScanConfig, out: Path, previous: dict[str, Any], class_names: list[str],
                           rule: dict[str, Any]) -> None:
    """Refuse a resume whose class list or decision rule differ, before the model loads.

    The settings that need the model (its fingerprints, the method it resolves, the precision it runs in,
    ``auto`` templates) are compared once it is loaded.
    """
    known = {"classes_sha256": classes_digest(class_names), "decision_rule": rule,
             "label_check": config.classes_from_folders}
    previous.setdefault("label_check", False)  # made before the label check existed
    different = [key for key, value in known.items() if key in previous and previous[key] != value]
    if different:
        raise resume_refused(out, different)


def _check_resumed_from_scan_folder(out: Path, previous: dict[str, Any], done: set[str]) -> None:
    """Refuse to resume, from another folder, a manifest whose rows are relative to the folder its scan ran in.

    Its relative rows name files there; here the same names are other files (or none), and the new meta
    would point every old row at them.
    """
    recorded, here = previous.get("cwd"), os.getcwd()
    if not isinstance(recorded, str) or not recorded or os.path.realpath(recorded) == os.path.realpath(here):
        return
    relative = next((path for path in done if is_relative_row(path)), None)
    if relative is not None:
        raise InputError(f"cannot resume {out} from {here}: its rows (e.g. {relative}) are relative to {recorded}, "
                         "where its scan ran; resume from there, or scan into another --out")


def _check_output_is_free(config: ScanConfig, out: Path, files: list[Discovered]) -> None:
    """Refuse to replace anything but a manifest of ours, and never an input, even with --overwrite."""
    resolved = real_path(out)
    if any(isinstance(item, DiscoveredFile) and real_path(item.path) == resolved for item in files):
        raise InputError(f"--out {out} is one of the scanned inputs; choose another manifest file")
    exists = out.exists() or any(sidecar(out, name).exists() for name in ("partial.jsonl", "calibration.json",
                                                                            "features.json", "features.f16"))
    if exists and not (config.resume or config.overwrite):
        raise InputError(f"manifest {out} (or one of its side files) already exists: pass --resume to continue it, "
                         "--overwrite to replace it, or --out another file")
    if exists and config.overwrite and not _is_manifest(out):
        raise InputError(f"--overwrite replaces only an oodfilter manifest, and {out} is not one (no "
                         f"{sidecar(out, 'meta.json').name} beside it, or not a file); choose another --out")


def _is_manifest(out: Path) -> bool:
    if out.exists() and (out.is_symlink() or not out.is_file()):
        return False
    return sidecar(out, "meta.json").is_file()


def _check_actions_are_local(config: ScanConfig, files: list[Discovered]) -> None:
    """Refuse to move, copy or link what is not a local file, before anything is scored."""
    if config.action == RESHARD:
        plan_reshard([item.name for item in files if item.error is None], str(config.dest))  # refuses early
        return
    remote = next((item for item in files if not item.local), None)
    if config.action == "tag" or remote is None:
        return
    raise InputError(f"--action {config.action} works on local image files only, and {remote.name} is not one "
                     "(a URL or a shard's sample); use --action tag and act on the manifest, or --action "
                     "reshard --dest DIR to write shards without the selected samples")


def _check_dest_outside_inputs(config: ScanConfig, files: list[Discovered]) -> None:
    if config.action == "tag" or not config.dest:
        return
    if os.path.lexists(config.dest) and not os.path.isdir(config.dest):
        raise InputError(f"--dest {config.dest} is not a folder (a file, or a symbolic link that leads nowhere: a "
                         "loop or a broken link); choose a folder")
    dest = real_path(config.dest)
    for root in {real_path(item.root) for item in files if isinstance(item, DiscoveredFile)}:
        if dest == root or dest.is_relative_to(root):
            raise InputError(f"--dest {config.dest} is inside the scanned folder {root}; choose a folder outside it "
                             "so a later scan does not pick up the moved files")


def _check_keep_fraction_resume(config: ScanConfig, out: Path, new_inputs: bool) -> None:
    """Refuse to re-decide a keep-fraction scan whose files were already moved by its decisions."""
    journal = sidecar(out, "journal.jsonl")
    if config.keep_fraction is None or not config.resume or not new_inputs or config.action == "tag":
        return
    if journal.is_file() and journal.stat().st_size > 0:
        raise InputError(f"cannot resume {out} with new inputs: --keep-fraction decides over all rows, so new rows "
                         "change earlier decisions, and files were already acted on (journal "
                         f"{journal.name}); undo them first (oodfilter undo {journal}) or scan into another --out")
