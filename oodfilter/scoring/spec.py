"""ScorerSpec: everything needed to build a ready scorer, as small picklable data.

A spec travels where a live model cannot be rebuilt cheaply by hand: into Ray actors, into DataLoader
filters, into plugins. :func:`oodfilter.scoring.factory.build_scorer` turns it into a
:class:`~oodfilter.scoring.scorer.Scorer`, the only place that assembles model, class list, method,
class vectors and decision rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from oodfilter.decision.calibration import Calibration
from oodfilter.text.templates import DEFAULT_TEMPLATES


@dataclass(frozen=True)
class ScorerSpec:
    """What to score with.

    Attributes:
        model: Anything :func:`oodfilter.load_model` accepts (bundle folder, reference .pt, open_clip
            name, ``hf-hub:``/``local-dir:``, ``test-tiny``).
        classes: A class-list file, or the class names themselves.
        pretrained: Pretrained tag or weights file for an open_clip name.
        method: Score method name; None picks ``atd`` for a model with a trained no-branch.
        templates: A template set name or a list of templates with one ``{}``.
        threshold: Decide ``ood_score > threshold``; None uses the method's threshold-free rule, if any.
        calibration: A :class:`~oodfilter.decision.Calibration` (or its JSON file) whose threshold decides
            instead; refused unless it was fitted for this model, class list, templates and method.
        require_decisions: Refuse a method that gives no decision without a threshold (for actions and
            drop mode); ``decisions_for`` names what needs them in the message.
        decisions_for: Who needs the decisions, e.g. ``--action move`` (message text only).
        device: ``auto``, ``cpu``, ``cuda`` (or ``cuda:N``).
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        batch_size: Images per forward pass.
        cache_dir: Cache root for class vectors and prepared method state.
        reference: Known in-distribution images the fitted methods (``knn``, ``mahalanobis``) fit on: image
            files, folders, globs, or manifests (one that stores features of the model's image tower is
            read without encoding).

    """

    model: str = "ViT-B-16"
    classes: str | Sequence[str] = field(default=())
    pretrained: str | None = None
    method: str | None = None
    templates: str | Sequence[str] = DEFAULT_TEMPLATES
    threshold: float | None = None
    calibration: Calibration | str | None = None
    require_decisions: bool = False
    decisions_for: str = "this use"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    cache_dir: str | None = None
    reference: Sequence[str] = ()
