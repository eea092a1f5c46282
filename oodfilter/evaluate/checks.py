"""Everything ``eval`` and ``robustness`` check before the model loads: options, sets, class list, labels, outputs.

:func:`check_eval` and :func:`check_robustness` run every check that needs no model and no scores, and
return what they read (the class names, the images of every set, the ID labels) so that nothing is read
twice. They import nothing heavy (no torch, open_clip or FAISS): the CLI runs them before it imports
torch, and :func:`~oodfilter.evaluate.runner.evaluate` and :func:`~oodfilter.evaluate.robustness.robustness`
run them first, so that a bad option, a missing set or class list, or an output that would be replaced
fails at once, never after a model load and minutes of text encoding.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from oodfilter.data.discovery import discover_images
from oodfilter.data.remote import check_url, is_url
from oodfilter.errors import InputError
from oodfilter.evaluate.config import EvalConfig
from oodfilter.evaluate.robustness_config import RobustnessConfig
from oodfilter.outputs import check_output, starts_with
from oodfilter.plugin_inspect import survey
from oodfilter.real_path import real_path
from oodfilter.scoring.checks import check_method_fits_model, check_spec
from oodfilter.scoring.methods import score_methods
from oodfilter.scoring.reference_paths import check_reference, check_reference_given
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.sinks.manifest import FORMATS, read_manifest
from oodfilter.sinks.row_paths import resolved_paths
from oodfilter.text.classes import ClassList

FPR_CONVENTIONS = ("clipn", "openood")
# Folder names that say nothing about a set; the parent folder names it instead.
_GENERIC_FOLDERS = {"images", "imgs", "img", "data", "val", "test", "train"}
# What ``robustness`` writes into its --out folder.
ROBUSTNESS_OUTPUTS = ("robustness.json", "images.jsonl", "images", "auroc_vs_eps_feature.png",
                      "auroc_vs_eps_score.png")


@dataclass(frozen=True)
class CheckedEval:
    """What :func:`check_eval` read.

    Attributes:
        set_names: The OOD sets' names, in the order of ``config.ood``.
        class_names: The class list.
        images: ``id`` and each OOD set's name → its images (a manifest's ok rows).
        labels: ``--id-labels`` read (absolute path → class index), or None without it.

    """

    set_names: list[str]
    class_names: ClassList
    images: dict[str, list[str]]
    labels: dict[str, int] | None


@dataclass(frozen=True)
class CheckedRobustness:
    """What :func:`check_robustness` read: the class list and the images of the ID and OOD sets."""

    class_names: ClassList
    id_images: list[str]
    ood_images: list[str]


def check_eval(config: EvalConfig, *, method_names: Collection[str] = (), model_given: bool = False) -> CheckedEval:
    """Check everything about an evaluation that needs no model and no scores; return what was read.

    Args:
        config: The evaluation.
        method_names: Methods the caller brings configured objects for (they need not be registered).
        model_given: The caller brings a loaded model, so ``config.model`` says nothing about what can run.

    Raises:
        InputError: a missing set or class list, a bad option, an attack budget out of range, an output
            that would replace something, a set without images, a bad label file, or a method asked for
            by name that the model cannot run.
        ClassListError: the class list cannot be read.
        UnknownNameError: an unknown method or template set.

    """
    if not config.id or not config.ood:
        raise InputError("pass the in-distribution images (--id) and at least one OOD set (--ood)")
    if not config.classes:
        raise InputError("pass the class list (--classes)")
    if config.fpr_convention not in FPR_CONVENTIONS:
        raise InputError(f"--fpr-convention must be one of {', '.join(FPR_CONVENTIONS)}, got '{config.fpr_convention}'")
    config.validate()  # numeric options in range
    set_names = eval_set_names(config.ood)
    if config.attack_eps:  # the attack's options, before any image is scored
        attack_config(config, config.ood[0], []).validate_budgets("--attack-eps")
    if config.out:
        check_eval_outputs(config, Path(config.out), set_names)
    spec = eval_spec(config)
    class_names = _check_methods(spec, config.methods, method_names, model_given)
    check_reference(config.reference)  # a missing reference fails before the model loads
    for name in config.methods:  # asked for by name: a fitted method without --reference is an error, not a skip
        if name.lower() not in {given.lower() for given in method_names}:
            check_reference_given(name, config.reference)
    images = {"id": read_image_set(config.id)}
    images.update({name: read_image_set(source) for name, source in zip(set_names, config.ood, strict=True)})
    for name, source in zip(["id", *set_names], [config.id, *config.ood], strict=True):
        if not images[name]:
            raise InputError(f"the {name} set {source} holds no images")
    labels = read_labels(config.id_labels, class_names) if config.id_labels else None
    if labels is not None:
        check_labels_cover(str(config.id_labels), images["id"], labels)
    return CheckedEval(set_names, class_names, images, labels)


def check_labels_cover(label_file: str, images: Sequence[str], labels: dict[str, int]) -> None:
    """Refuse a label file that lacks a label for some ID image (the accuracy would silently leave it out).

    Raises:
        InputError: an ID image has no label; the message names the first one and how label paths are read.

    """
    unmatched = [path for path in images if _label_key(path) not in labels]
    if not unmatched:
        return
    example = next(iter(labels), None)
    read_as = f" (a label path is read relative to the label file's folder: its first is {example})" if example else ""
    raise InputError(f"--id-labels {label_file} has no label for {len(unmatched)} of the {len(images)} ID images, the "
                     f"first being {unmatched[0]}{read_as}; label every ID image (file or path column), or leave "
                     "--id-labels out")


def _label_key(path: str) -> str:
    """Return the key an ID image's label is stored under (as :func:`read_labels` makes it)."""
    return path if is_url(path) else str(real_path(Path(path)))


def check_robustness(config: RobustnessConfig, *, method_names: Collection[str] = (),
                     model_given: bool = False) -> CheckedRobustness:
    """Check everything about a robustness run that needs no model and no scores; return what was read.

    Args:
        config: What to attack and how.
        method_names: Methods the caller brings configured objects for (they need not be registered).
        model_given: The caller brings a loaded model, so ``config.model`` says nothing about what can run.

    Raises:
        InputError: a bad option, an ``out`` folder that holds results (without ``overwrite``) or lies
            inside an image set, a set without images, a URL with credentials, or a method asked for by
            name that the model cannot run.
        ClassListError: the class list cannot be read.
        UnknownNameError: an unknown method or template set.

    """
    config.validate()
    if config.out:
        check_robustness_out(Path(config.out), config.overwrite, [config.id, config.ood])
    class_names = _check_methods(robustness_spec(config), config.methods, method_names, model_given)
    sets = {}
    for what, source in (("in-distribution", config.id), ("OOD", config.ood)):
        sets[what] = listed_images(source)
        if not sets[what]:
            raise InputError(f"the {what} set {source} holds no images")
    return CheckedRobustness(class_names, sets["in-distribution"], sets["OOD"])


def _check_methods(spec: ScorerSpec, methods: Sequence[str], given: Collection[str], model_given: bool) -> ClassList:
    """Check the spec (class list, templates, batch size) and every method asked for by name; return the classes."""
    checked = check_spec(spec, model_known=True)  # each method is judged against the model below
    objects = {name.lower() for name in given}
    for name in methods:
        if name.lower() in objects:
            continue
        score_methods.check_known(name)
        if not model_given:  # asked for by name: one the model cannot run is an error, not a skip
            check_method_fits_model(replace(spec, method=name))
    return checked.class_names if checked.class_names is not None else ClassList()


def eval_spec(config: EvalConfig) -> ScorerSpec:
    """Return the scorer spec an evaluation shares between its methods (the method is set per method)."""
    return ScorerSpec(model=config.model, classes=config.classes, pretrained=config.pretrained,
                      templates=config.templates, device=config.device, precision=config.precision,
                      batch_size=config.batch_size, cache_dir=config.cache_dir)


def robustness_spec(config: RobustnessConfig) -> ScorerSpec:
    """Return the scorer spec of a robustness run (float32: the attack differentiates through the model)."""
    return ScorerSpec(model=config.model, classes=config.classes, pretrained=config.pretrained,
                      templates=config.templates, device=config.device, precision="fp32",
                      batch_size=config.batch_size, cache_dir=config.cache_dir)


def attack_config(config: EvalConfig, source: str, methods: list[str]) -> RobustnessConfig:
    """Return the feature attack of ``--attack-eps`` on one OOD set, as a RobustnessConfig."""
    return RobustnessConfig(model=config.model, classes=config.classes, pretrained=config.pretrained, id=config.id,
                            ood=source, methods=methods, eps=config.attack_eps, steps=config.attack_steps,
                            objectives=["feature"], templates=config.templates, cache_dir=config.cache_dir,
                            batch_size=config.batch_size, device=config.device)


def read_image_set(source: str) -> list[str]:
    """Return the image paths of a folder, glob or file list, or the ``ok`` rows of a scan manifest.

    A manifest's relative paths are resolved from the folder its scan ran in (:mod:`oodfilter.sinks.row_paths`).
    """
    if Path(source).is_file() and Path(source).suffix.lower() in FORMATS:
        return resolved_paths(source, (row for row in read_manifest(source) if row.ok))
    return [item.name for item in discover_images([source])]


def listed_images(source: str | list[str]) -> list[str]:
    """Return the images of a set: a list as given, else a folder's, a glob's, a URL's or a manifest's ok rows.

    Raises:
        InputError: a URL carries credentials (they would be written to the outputs).

    """
    paths = [str(path) for path in source] if isinstance(source, list) else read_image_set(source)
    for path in paths:
        if is_url(path):
            check_url(path)
    return paths


def read_labels(path: str, class_names: Sequence[str]) -> dict[str, int]:
    """Read ``file``/``path`` → ``class_index`` or ``class_name`` (TSV or CSV); keys are absolute paths.

    Raises:
        InputError: the file cannot be read, has missing columns, or names a class not in the class list.
    """
    table = Path(path)
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if table.suffix.lower() == ".tsv" else ","))
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"label file {table} cannot be read: {error}") from None
    if not rows:
        raise InputError(f"label file {table} is empty")
    path_key = "path" if "path" in rows[0] else "file" if "file" in rows[0] else None
    if path_key is None or not ({"class_index", "class_name"} & set(rows[0])):
        raise InputError(f"label file {table} needs a 'file' (or 'path') column and 'class_index' or 'class_name'")
    index_of = {name: i for i, name in reversed(list(enumerate(class_names)))}
    labels = {}
    for row in rows:
        file = Path(row[path_key])
        key = str(real_path(file if file.is_absolute() else table.parent / file))
        if "class_index" in row and row["class_index"] not in (None, ""):
            try:
                labels[key] = int(row["class_index"])
            except ValueError:
                raise InputError(f"label file {table}: class_index '{row['class_index']}' is not a whole number") \
                    from None
        elif row["class_name"] in index_of:
            labels[key] = index_of[row["class_name"]]
        else:
            raise InputError(f"label file {table}: class '{row['class_name']}' is not in the class list")
    return labels


def eval_set_names(sources: list[str]) -> list[str]:
    """Name each OOD set after its folder (or the folder above a generic one), made unique."""
    names: list[str] = []
    for source in sources:
        path = Path(source.rstrip("/"))
        base = (path.parent.name if path.stem in _GENERIC_FOLDERS else path.stem) or "ood"
        name, n = base, 2
        while name in names or name == "id":
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def histogram_path(out: Path, method: str) -> Path:
    """Return where eval writes ``method``'s score histogram beside ``out``."""
    return out.with_name(f"{out.stem}.{method}.png")


def check_eval_outputs(config: EvalConfig, out: Path, set_names: list[str]) -> None:
    """Refuse to replace anything but earlier results (and their PNGs) or one of the image sets read."""
    inputs = [config.id, *config.ood] + ([config.id_labels] if config.id_labels else [])
    check_output(out, overwrite=config.overwrite, kind="results JSON", is_expected_kind=starts_with(b"{"),
                 inputs=inputs)
    if config.plots:
        methods = config.methods or list(survey(score_methods).entries)  # every method that may run; none imported
        for method in methods:
            check_output(histogram_path(out, method.lower()), overwrite=config.overwrite, kind="histogram PNG",
                         is_expected_kind=starts_with(b"\x89PNG"), inputs=inputs)


def check_robustness_out(out: Path, overwrite: bool, sets: list[str | list[str]]) -> None:
    """Refuse an --out that is a file, lies inside an image set, or holds outputs (without --overwrite)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder")
    resolved = real_path(out)
    for source in sets:
        for folder in _local_folders(source):
            if resolved == folder or resolved.is_relative_to(folder):
                raise InputError(f"--out {out} is inside the image set {folder}, so a later run would read the "
                                 "manipulated images as inputs; choose a folder outside it")
    existing = [name for name in ROBUSTNESS_OUTPUTS if os.path.lexists(out / name)]
    if existing and not overwrite:
        raise InputError(f"{out} already holds {', '.join(existing)}: pass --overwrite to replace them, or another "
                         "--out")
    images = out / "images"
    if os.path.lexists(images) and (images.is_symlink() or not images.is_dir()):
        raise InputError(f"{images} is not a folder of ours; choose another --out")


def _local_folders(source: str | list[str]) -> list[Path]:
    """Return the local folders an image set reads: a folder, a glob's fixed part, a manifest's folder."""
    texts = [source] if isinstance(source, str) else []
    folders = []
    for text in texts:
        if is_url(text):
            continue
        fixed = Path(text.split("*")[0].split("?")[0].split("[")[0])
        folder = fixed if fixed.is_dir() else fixed.parent
        folders.append(real_path(folder))
    return folders
