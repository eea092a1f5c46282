"""The one way to build a scorer: :class:`ScorerSpec` → model, class list, method, class vectors → Scorer.

Scan, the pipeline filter, eval, the Ray actors and plugins all call :func:`build_scorer` (as open_clip's
``create_model_and_transforms`` wraps ``create_model``); none re-assembles the parts.
"""

from __future__ import annotations

from pathlib import Path

from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import score_identity
from oodfilter.device import resolve_device
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.model.factory import load_model, model_has_trained_no_branch
from oodfilter.scoring.methods import ScoreMethod, choose_method, score_methods
from oodfilter.scoring.scorer import Scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.text.class_vectors import ClassVectors, build_class_vectors
from oodfilter.text.classes import ClassList, clean_class_names, read_class_names


def read_spec_classes(spec: ScorerSpec) -> ClassList:
    """Return the spec's class names: read from its class-list file, or cleaned from the names given.

    Raises:
        ClassListError: the file is missing or unreadable, or no name is left.

    """
    if isinstance(spec.classes, str | Path):
        return read_class_names(spec.classes)
    return clean_class_names(spec.classes)


def load_spec_model(spec: ScorerSpec) -> CLIPN:
    """Load the spec's model on its device (see :func:`oodfilter.load_model`); catalogue models use its cache."""
    return load_model(spec.model, spec.pretrained, device=spec.device, cache_dir=spec.cache_dir)


def check_method_fits_model(spec: ScorerSpec, method: ScoreMethod | None = None) -> None:
    """Refuse, from the model's name alone, a method its model cannot run: before any weights are fetched.

    A model without a trained no-branch (an open_clip name, a hub repository without a bundle) cannot
    run the default method or any CLIPN method (``atd``, ``ctw``); this is known from the name (see
    :func:`~oodfilter.model.factory.model_has_trained_no_branch`), so it fails here in a moment rather
    than after a download of hundreds of megabytes.

    Raises:
        InputError: no method was given and the model has no trained no-branch, or the method needs one.
        UnknownNameError: an unknown method name.

    """
    trained = model_has_trained_no_branch(spec.model)
    if method is None:
        name = choose_method(spec.method, no_branch_trained=trained, model_name=str(spec.model))
        needs_no_branch = score_methods.get(name).needs_no_branch
    else:
        name, needs_no_branch = method.name, method.needs_no_branch
    if needs_no_branch and not trained:
        plain = ", ".join(known for known in score_methods.list() if not score_methods.get(known).needs_no_branch)
        raise InputError(
            f"method '{name}' needs a trained CLIPN no-branch, and model '{spec.model}' has none (use a CLIPN "
            f"model such as clipn-vitb16, see 'oodfilter models', or a bundle from 'oodfilter convert-clipn' or "
            f"'oodfilter finetune'); or pick a method that needs none: {plain}"
        )


def resolve_method(spec: ScorerSpec, model: CLIPN, method: ScoreMethod | None = None) -> ScoreMethod:
    """Return the spec's score method for ``model`` (``method`` if given), checked for ``require_decisions``.

    Raises:
        InputError: no method fits the model, or decisions are required and the method has no
            threshold-free rule and no threshold was given.
        UnknownNameError: an unknown method name.

    """
    if method is None:
        name = choose_method(spec.method, no_branch_trained=model.no_branch_trained, model_name=model.source.name)
        method = score_methods.create(name)
    if spec.require_decisions and spec.threshold is None and spec.calibration is None and not method.threshold_free:
        raise InputError(f"{spec.decisions_for} needs decisions, and '{method.name}' has no threshold-free rule: "
                         "pass threshold= or calibration= (Python), or --threshold X or --id-recall R with "
                         "--calibrate-on ID_IMAGES (command line)")
    return method


def build_scorer(
    spec: ScorerSpec,
    *,
    model: CLIPN | None = None,
    class_vectors: ClassVectors | None = None,
    method: ScoreMethod | None = None,
    allow_untrained_no_branch: bool = False,
) -> Scorer:
    """Build a ready :class:`Scorer` from ``spec``.

    Args:
        spec: What to score with.
        model: An already loaded model to use instead of loading ``spec.model`` (it stays on its device
            unless ``spec.device`` names one).
        class_vectors: Class vectors already built from ``model`` for the spec's class list (eval shares
            one set across methods); built (and cached) otherwise.
        method: A configured method instance instead of the registry's default for ``spec.method``.
        allow_untrained_no_branch: Permit CLIPN methods with a no-branch that was never trained.

    Raises:
        InputError: bad options, or a method that cannot run with this model (decided from the model's
            name before it is loaded, when the model is not given), or a calibration fitted on other scores.
        ModelLoadError: the model cannot be loaded.
        ClassListError: the class list cannot be read.

    """
    if spec.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {spec.batch_size}")
    if spec.threshold is not None and spec.calibration is not None:
        raise InputError("a threshold and a calibration each set the decision; pass one of them")
    names = read_spec_classes(spec) if class_vectors is None else None  # a bad list fails before any load
    if model is None and not allow_untrained_no_branch:
        check_method_fits_model(spec, method)  # from the name: before any download
    clipn = model if model is not None else load_spec_model(spec)
    chosen = resolve_method(spec, clipn, method)
    device = None if model is not None and spec.device == "auto" else spec.device
    if class_vectors is None:
        if device is not None:  # text is encoded where the scorer will run, in its precision
            clipn = clipn.to(resolve_device(device))
        class_vectors = build_class_vectors(clipn, names or [], templates=spec.templates, cache_dir=spec.cache_dir,
                                            include_no=chosen.needs_no_branch, precision=spec.precision)
    scorer = Scorer(clipn, class_vectors, chosen, threshold=spec.threshold, device=device,
                    batch_size=spec.batch_size, precision=spec.precision,
                    allow_untrained_no_branch=allow_untrained_no_branch, cache_dir=spec.cache_dir)
    if spec.calibration is not None:
        scorer.threshold = _checked_calibration(spec.calibration, scorer).threshold
    return scorer


def _checked_calibration(calibration: Calibration | str, scorer: Scorer) -> Calibration:
    """Load (from a path) and check that a calibration was fitted on this scorer's scores."""
    if not isinstance(calibration, Calibration | str | Path):
        given = type(calibration).__name__
        raise InputError(f"calibration= takes a Calibration or the path of its JSON file, got {given} "
                         "(Calibration.from_dict(data) rebuilds one from data)")
    loaded = calibration if isinstance(calibration, Calibration) else Calibration.load(calibration)
    where = "the calibration" if isinstance(calibration, Calibration) else f"calibration file {calibration}"
    loaded.check_fits(scorer.method.name, score_identity(scorer), where=where)
    return loaded
