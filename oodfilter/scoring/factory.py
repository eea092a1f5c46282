"""The one way to build a scorer: :class:`ScorerSpec` → model, class list, method, class vectors → Scorer.

Scan, the pipeline filter, eval, the Ray actors and plugins all call :func:`build_scorer` (as open_clip's
``create_model_and_transforms`` wraps ``create_model``); none re-assembles the parts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from oodfilter.decision.calibration import Calibration
from oodfilter.decision.identity import score_identity
from oodfilter.device import resolve_device
from oodfilter.model.clipn import CLIPN
from oodfilter.model.factory import load_model
from oodfilter.scoring.checks import check_decisions, check_spec
from oodfilter.scoring.checks import check_method_fits_model as check_method_fits_model  # re-exported
from oodfilter.scoring.checks import read_spec_classes as read_spec_classes  # re-exported
from oodfilter.scoring.methods import PrerequisiteContext, ScoreMethod, choose_method, score_methods
from oodfilter.scoring.reference import ReferenceFeatures, load_reference
from oodfilter.scoring.scorer import Scorer, check_method_runs_on
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.text.class_vectors import ClassVectors, build_class_vectors


def load_spec_model(spec: ScorerSpec) -> CLIPN:
    """Load the spec's model on its device (see :func:`oodfilter.load_model`); catalogue models use its cache."""
    return load_model(spec.model, spec.pretrained, device=spec.device, cache_dir=spec.cache_dir)


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
    check_decisions(spec, method.name, threshold_free=method.threshold_free)
    return method


def build_scorer(
    spec: ScorerSpec,
    *,
    model: CLIPN | None = None,
    class_vectors: ClassVectors | None = None,
    method: ScoreMethod | None = None,
    allow_untrained_no_branch: bool = False,
    reference: ReferenceFeatures | None = None,
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
        reference: Reference features already loaded (eval shares one set across methods); else the
            spec's ``reference`` items are read or encoded (:func:`~oodfilter.scoring.reference.load_reference`)
            once the class vectors exist, and the method fits on them.

    Raises:
        InputError: bad options, or a method that cannot run with this model (decided from the model's
            name before it is loaded, when the model is not given), or a calibration fitted on other scores.
        ModelLoadError: the model cannot be loaded.
        ClassListError: the class list cannot be read.

    """
    checked = check_spec(spec, method=method, read_classes=class_vectors is None,  # everything that needs no model
                         model_known=model is not None or allow_untrained_no_branch,
                         reference_given=reference is not None)
    names = checked.class_names
    clipn = model if model is not None else load_spec_model(spec)
    chosen = resolve_method(spec, clipn, method)
    check_method_runs_on(clipn, chosen, allow_untrained_no_branch)  # before any text is encoded
    if class_vectors is None:  # a method that cannot run says so before the class vectors are encoded
        cache = Path(spec.cache_dir) if spec.cache_dir is not None else None
        fits_on = bool(spec.reference) or reference is not None
        chosen.check_prerequisites(PrerequisiteContext(clipn, names or [], cache, reference_features=fits_on))
    device = None if model is not None and spec.device == "auto" else spec.device
    if class_vectors is None:
        if device is not None:  # text is encoded where the scorer will run, in its precision
            clipn = clipn.to(resolve_device(device))
        class_vectors = build_class_vectors(clipn, names or [], templates=spec.templates, cache_dir=spec.cache_dir,
                                            include_no=chosen.needs_no_branch, precision=spec.precision)
    if reference is None and spec.reference and not fits_on_reference(chosen):
        warnings.warn(f"--reference is not used: method '{chosen.name}' is not fitted on reference images (knn and "
                      "mahalanobis are), so they are not read", stacklevel=2)
    elif reference is None and spec.reference:  # encoded by a plain scorer of the same model, device and precision
        encoder = Scorer(clipn, class_vectors, "msp", device=device, batch_size=spec.batch_size,
                         precision=spec.precision)
        reference = load_reference(spec.reference, encoder)
    scorer = Scorer(clipn, class_vectors, chosen, threshold=spec.threshold, device=device,
                    batch_size=spec.batch_size, precision=spec.precision,
                    allow_untrained_no_branch=allow_untrained_no_branch, cache_dir=spec.cache_dir,
                    reference_features=reference.features if reference is not None else None)
    scorer.reference = reference
    if checked.calibration is not None:
        scorer.threshold = _checked_calibration(spec, checked.calibration, scorer).threshold
    return scorer


def fits_on_reference(method: ScoreMethod) -> bool:
    """Whether ``method`` may use reference features: a fitted built-in (knn, mahalanobis), or any plugin's."""
    return method.needs_reference or not type(method).__module__.startswith("oodfilter.")


def _checked_calibration(spec: ScorerSpec, loaded: Calibration, scorer: Scorer) -> Calibration:
    """Check that the spec's calibration (read by :func:`check_spec`) was fitted on this scorer's scores."""
    where = "the calibration" if isinstance(spec.calibration, Calibration) else f"calibration file {spec.calibration}"
    loaded.check_fits(scorer.method.name, score_identity(scorer), where=where)
    return loaded
