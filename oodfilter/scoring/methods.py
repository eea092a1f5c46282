"""Built-in score methods, registered in the ``score_methods`` registry like any plugin.

Plugins register under the entry-point group ``oodfilter.scorers``.

Each method turns a :class:`FeatureBatch` (image features and their cosines to the class vectors) into a
:class:`~oodfilter.scoring.functional.ScoreOutput`; the math lives in :mod:`oodfilter.scoring.functional`.
This module imports neither torch nor that math until a method scores (each ``__call__`` imports it), so that
``oodfilter plugins`` and ``--help`` list the methods without loading torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from oodfilter.deprecation import deprecated_attribute, warn_deprecated
from oodfilter.errors import InputError
from oodfilter.plugin_inspect import survey
from oodfilter.registry import Registry

if TYPE_CHECKING:
    import torch

    from oodfilter.scoring.functional import ScoreOutput


@dataclass(frozen=True)
class FeatureBatch:
    """Everything a score needs about a batch of images.

    Attributes:
        features: (B, D) L2-normalised image features.
        cosines_yes: (B, C) cosines to the yes class vectors.
        cosines_no: (B, C) cosines to the no class vectors, or None without a no-branch.
        logit_scale: The model's fixed logit scale s.

    """

    features: torch.Tensor
    cosines_yes: torch.Tensor
    cosines_no: torch.Tensor | None
    logit_scale: float

    @property
    def logits_yes(self) -> torch.Tensor:
        """(B, C) yes logits s·cos."""
        return self.logit_scale * self.cosines_yes

    @property
    def logits_no(self) -> torch.Tensor:
        """(B, C) no logits s·cos; raises if the batch has no no-branch cosines."""
        if self.cosines_no is None:
            raise ValueError("this batch has no no-branch cosines; build the class vectors with include_no=True")
        return self.logit_scale * self.cosines_no


@dataclass
class ScoringContext:
    """What a score method may use to prepare itself (mine negatives, load or fit a probe).

    Attributes:
        model: The CLIPN model.
        class_vectors: The class vectors of the ID class list.
        device: Where scoring runs.
        cache_dir: Cache root for prepared state (None: the default cache folder).
        reference_features: Optional (N, D) features of unlabelled ID images, for methods that fit on
            them (PLP) when nothing fitted is saved.
        text_precision: The precision to encode extra text in (``fp32`` or ``bf16``), as the class vectors
            were: pass it to :func:`oodfilter.build_class_vectors` (e.g. a negative-label vocabulary).
    """

    model: Any
    class_vectors: Any
    device: torch.device
    cache_dir: Path | None = None
    reference_features: torch.Tensor | None = None
    text_precision: str = "fp32"

    @property
    def text_index(self) -> Any:
        """Deprecated name of :attr:`class_vectors` (kept for one release)."""
        warn_deprecated("ScoringContext.text_index", "ScoringContext.class_vectors")
        return self.class_vectors


@dataclass(frozen=True)
class PrerequisiteContext:
    """What a method may check before any text is encoded (see :meth:`ScoreMethod.check_prerequisites`).

    Attributes:
        model: The loaded CLIPN model.
        class_names: The ID class names.
        cache_dir: Cache root for prepared state (None: the default cache folder).
        reference_features: Whether :meth:`ScoreMethod.prepare` will be given unlabelled ID features.

    """

    model: Any
    class_names: Sequence[str]
    cache_dir: Path | None = None
    reference_features: bool = False


class ScoreMethod(ABC):
    """A zero-shot OOD score over shared image features (higher = more OOD).

    Subclasses set ``name``, may override :meth:`prepare` to build state from the model and class list,
    and implement ``__call__``. Plugins register subclasses under the entry-point group
    ``oodfilter.scorers``.
    """

    name: ClassVar[str]
    needs_no_branch: ClassVar[bool] = False
    threshold_free: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False  # fitted on reference ID features (knn, mahalanobis)

    def check_prerequisites(self, context: PrerequisiteContext) -> None:  # noqa: B027 - optional hook
        """Refuse now what :meth:`prepare` would refuse for a reason known before any text is encoded.

        Called once the model is loaded and before the class vectors are built (minutes for a long class
        list on a CPU), so that a missing prerequisite (PLP's fitted probe) fails at once. Default: nothing.

        Raises:
            InputError: the method cannot run; the message says what to do.

        """

    def prepare(self, context: ScoringContext) -> None:  # noqa: B027 - optional hook, empty by default
        """Build any state the method needs before scoring (default: nothing)."""

    @abstractmethod
    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score a batch: (B,) ood scores and, for threshold-free methods, (B,) decisions."""


# The entry-point group stays `oodfilter.scorers`, so plugins written for 0.1 keep registering.
score_methods: Registry[type[ScoreMethod]] = Registry("scorers")


@score_methods.register("atd")
class ATD(ScoreMethod):
    """CLIPN agreeing-to-differ: ood = p_{C+1} = Σ_c pⁿᵒ_c p_c; OOD iff p_{C+1} > max_c pʸᵉˢ_c p_c."""

    name = "atd"
    needs_no_branch = True
    threshold_free = True

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score with :func:`oodfilter.scoring.functional.atd`."""
        from oodfilter.scoring import functional as fn

        return fn.atd(batch.logits_yes, batch.logits_no)


@score_methods.register("ctw")
class CTW(ScoreMethod):
    """CLIPN competing-to-win: ood = pⁿᵒ of the top class; OOD iff it exceeds 0.5."""

    name = "ctw"
    needs_no_branch = True
    threshold_free = True

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score with :func:`oodfilter.scoring.functional.ctw`."""
        from oodfilter.scoring import functional as fn

        return fn.ctw(batch.logits_yes, batch.logits_no)


@score_methods.register("msp")
class MSP(ScoreMethod):
    """Maximum softmax probability of the yes classifier: ood = 1 − max_c softmax(s·cos)_c."""

    name = "msp"

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score with :func:`oodfilter.scoring.functional.msp`."""
        from oodfilter.scoring import functional as fn

        return fn.msp(batch.logits_yes)


@score_methods.register("maxlogit")
class MaxLogit(ScoreMethod):
    """Maximum logit: ood = −max_c s·cos_c."""

    name = "maxlogit"

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score with :func:`oodfilter.scoring.functional.max_logit`."""
        from oodfilter.scoring import functional as fn

        return fn.max_logit(batch.logits_yes)


@score_methods.register("energy")
class Energy(ScoreMethod):
    """Energy: ood = −logsumexp_c s·cos_c."""

    name = "energy"

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score with :func:`oodfilter.scoring.functional.energy`."""
        from oodfilter.scoring import functional as fn

        return fn.energy(batch.logits_yes)


@score_methods.register("mcm")
class MCM(ScoreMethod):
    """Maximum concept matching: ood = 1 − max_c softmax(cos_c / T), T = 1 (unscaled cosines)."""

    name = "mcm"

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score with :func:`oodfilter.scoring.functional.mcm`."""
        from oodfilter.scoring import functional as fn

        return fn.mcm(batch.cosines_yes)


def choose_method(method: str | None, *, no_branch_trained: bool, model_name: str) -> str:
    """Return ``method`` (lower-cased), or the default: ``atd`` when the model has a trained no-branch.

    Raises:
        InputError: no method was given and the model has no trained no-branch; the message lists the
            methods that need none.

    """
    if method:
        return method.lower()
    if no_branch_trained:
        return "atd"
    plain = ", ".join(plain_methods())
    raise InputError(
        f"model '{model_name}' has no trained CLIPN no-branch, so the default method (atd) cannot run: "
        f"pass --method with one of {plain}, or --model a CLIPN model (clipn-vitb16, see 'oodfilter models', "
        "or a bundle from 'oodfilter convert-clipn')"
    )


def plain_methods() -> list[str]:
    """Return the methods that need no trained no-branch (for messages; plugins are read, not imported).

    Those fitted on reference images come last, each said with what it needs ("knn (with --reference)"), so
    a message listing them never offers a method that would be refused next.
    """
    found = survey(score_methods, ("needs_no_branch", "needs_reference"))
    plain = [(name, attributes) for name, (_, attributes) in found.entries.items()
             if not attributes.get("needs_no_branch", False)]
    return ([name for name, attributes in plain if not attributes.get("needs_reference", False)]
            + [f"{name} (with --reference)" for name, attributes in plain if attributes.get("needs_reference", False)])


# The reference-fitted methods (knn, mahalanobis) live in their own module and register on import.
from oodfilter.scoring import fitted as _fitted  # noqa: E402, F401 - registers knn and mahalanobis

_DEPRECATED = {"scorers": "score_methods"}


def __getattr__(name: str) -> object:
    return deprecated_attribute(__name__, globals(), _DEPRECATED, name)
