"""The checks of a :class:`~oodfilter.scoring.spec.ScorerSpec` that need neither the model nor any text encoding.

:func:`~oodfilter.scoring.factory.build_scorer` runs them before it loads anything, and the commands run
them before they import torch, so that a bad class list, template set, method name, method for the model,
or calibration file fails in a moment instead of after a model load and minutes of text encoding. This
module imports nothing heavy (no torch, open_clip or FAISS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oodfilter.decision.calibration import Calibration
from oodfilter.errors import InputError
from oodfilter.model.no_branch import model_has_trained_no_branch
from oodfilter.scoring.methods import ScoreMethod, choose_method, plain_methods, score_methods
from oodfilter.scoring.reference_paths import check_reference, check_reference_given
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.text.classes import ClassList, clean_class_names, read_class_names
from oodfilter.text.templates import AUTO_TEMPLATES, resolve_templates


@dataclass(frozen=True)
class CheckedSpec:
    """What :func:`check_spec` read on the way, so that nothing is read twice.

    Attributes:
        class_names: The spec's class names (None when they were not asked for).
        calibration: The spec's calibration, read from its file if it names one (None without one).

    """

    class_names: ClassList | None
    calibration: Calibration | None


def check_spec(spec: ScorerSpec, *, method: ScoreMethod | None = None, read_classes: bool = True,
               model_known: bool = False, reference_given: bool = False) -> CheckedSpec:
    """Run every check of ``spec`` that needs no model and no encoding; return what was read.

    Args:
        spec: The spec to check.
        method: A method instance that replaces the registry's ``spec.method``.
        read_classes: Read (and check) the class list; False when class vectors are given instead.
        model_known: The model is given (or a CLIPN method may run with an untrained no-branch): do not
            judge the method against the model's name.
        reference_given: Reference features are given already loaded (not as ``spec.reference`` paths).

    Raises:
        InputError: a bad batch size, two decision rules, a method the model cannot run, a method without
            decisions where decisions are required, an unreadable calibration file, a missing ``reference``
            item, or a method fitted on reference images (knn, mahalanobis) without them.
        ClassListError: the class list is missing, unreadable or empty.
        UnknownNameError: an unknown template set or method.

    """
    if spec.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {spec.batch_size}")
    if spec.threshold is not None and spec.calibration is not None:
        raise InputError("a threshold and a calibration each set the decision; pass one of them")
    names = read_spec_classes(spec) if read_classes else None  # a bad list fails before any load
    check_templates(spec.templates)
    if method is None and spec.method:
        score_methods.check_known(spec.method)  # nothing loaded for a typo
    if not model_known:
        check_method_fits_model(spec, method)  # from the name: before any download
    check_reference(spec.reference)  # a missing reference path fails before the model loads
    check_reference_given(spec.method, spec.reference, method, reference_given=reference_given)
    return CheckedSpec(names, load_spec_calibration(spec))


def read_spec_classes(spec: ScorerSpec) -> ClassList:
    """Return the spec's class names: read from its class-list file, or cleaned from the names given.

    Raises:
        ClassListError: the file is missing or unreadable, or no name is left.

    """
    if isinstance(spec.classes, str | Path):
        return read_class_names(spec.classes)
    return clean_class_names(spec.classes)


def check_templates(templates: str | Sequence[str]) -> None:
    """Refuse an unknown template set or a malformed template list (``auto`` is resolved once the model is known).

    Raises:
        UnknownNameError: an unknown set name.
        InputError: an empty list, or a template without exactly one ``{}``.

    """
    if templates != AUTO_TEMPLATES:
        resolve_templates(templates)


def check_method_fits_model(spec: ScorerSpec, method: ScoreMethod | None = None) -> None:
    """Refuse, from the model's name alone, a method its model cannot run: before any weights are fetched.

    A model without a trained no-branch (an open_clip name, a hub repository without a bundle) cannot
    run the default method or any CLIPN method (``atd``, ``ctw``); this is known from the name (see
    :func:`~oodfilter.model.no_branch.model_has_trained_no_branch`), so it fails here in a moment rather
    than after a download of hundreds of megabytes. A method without decisions where the spec requires
    them is refused here too.

    Raises:
        InputError: no method was given and the model has no trained no-branch, the method needs one, or
            decisions are required and the method gives none without a threshold.
        UnknownNameError: an unknown method name.

    """
    trained = model_has_trained_no_branch(spec.model)
    if method is None:
        name = choose_method(spec.method, no_branch_trained=trained, model_name=str(spec.model))
        score_methods.check_known(name)
        chosen = score_methods.peek(name) or score_methods.get(name)  # a plugin is loaded only if it is the one
        needs_no_branch, threshold_free = chosen.needs_no_branch, chosen.threshold_free
    else:
        name, needs_no_branch, threshold_free = method.name, method.needs_no_branch, method.threshold_free
    if needs_no_branch and not trained:
        plain = ", ".join(plain_methods())
        raise InputError(
            f"method '{name}' needs a trained CLIPN no-branch, and model '{spec.model}' has none (use a CLIPN "
            f"model such as clipn-vitb16, see 'oodfilter models', or a bundle from 'oodfilter convert-clipn' or "
            f"'oodfilter finetune'); or pick a method that needs none: {plain}"
        )
    check_decisions(spec, name, threshold_free=threshold_free)


def check_decisions(spec: ScorerSpec, method: str, *, threshold_free: bool) -> None:
    """Refuse a method that gives no decision when ``spec`` requires decisions and sets no threshold.

    Raises:
        InputError: decisions are required, no threshold or calibration is given, and ``method`` has no
            threshold-free rule.

    """
    if spec.require_decisions and spec.threshold is None and spec.calibration is None and not threshold_free:
        raise InputError(f"{spec.decisions_for} needs decisions, and '{method}' has no threshold-free rule: "
                         "pass threshold= or calibration= (Python), or --threshold X or --id-recall R with "
                         "--calibrate-on ID_IMAGES (command line)")


def load_spec_calibration(spec: ScorerSpec) -> Calibration | None:
    """Return the spec's calibration, read now when it names a file (whether it fits is checked on the scores).

    Raises:
        InputError: ``calibration`` is neither a :class:`Calibration` nor a path, or its file cannot be read.

    """
    calibration = spec.calibration
    if calibration is None or isinstance(calibration, Calibration):
        return calibration
    if not isinstance(calibration, str | Path):
        given = type(calibration).__name__
        raise InputError(f"calibration= takes a Calibration or the path of its JSON file, got {given} "
                         "(Calibration.from_dict(data) rebuilds one from data)")
    return Calibration.load(calibration)
