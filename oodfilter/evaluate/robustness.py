"""``oodfilter robustness``: how well each score method still filters OOD images an attacker has perturbed.

Every OOD image is perturbed within an L∞ budget ε (in 8-bit levels: ε = 4 means 4/255) to look
in-distribution (:mod:`oodfilter.robustness`), with two objectives:

* ``feature``: push the image's feature towards an ID target (the feature of an ID image, or an ID class's
  text vector), independent of any method (the PLP study's manipulation); one set of manipulated images is
  scored by every method;
* ``score``: minimise the method's own OOD score, white-box through the image tower (one set per method).

Per objective, method and ε the report gives AUROC and FPR95 of the clean ID images against the
manipulated OOD images, the attack's success rate (the share of manipulated OOD images the method accepts:
at the threshold that keeps ``id_recall`` of the ID images, and by its own rule for CTW/ATD), and the mean
L∞ and L2 of the perturbations actually applied. ε = 0 is the clean image, so its row is the clean result.
The attack runs in float32 on the image's pixels after the model's resize and crop, before normalisation;
the manipulated images are measured after rounding to 8 bits, exactly as the PNGs written with ``out`` hold
them, and those PNGs re-scan to the same scores (``oodfilter scan`` of the folder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from oodfilter.atomic import atomic_write_text
from oodfilter.data.decode import ImageDecodeError, load_rgb_image
from oodfilter.data.split_transform import SplitTransform, split_transform
from oodfilter.decision.calibration import recall_threshold
from oodfilter.errors import InputError, OODFilterError
from oodfilter.evaluate.checks import CheckedRobustness, check_robustness, robustness_spec
from oodfilter.evaluate.metrics import auroc, fpr_at_95_tpr
from oodfilter.evaluate.robustness_config import RobustnessConfig
from oodfilter.evaluate.trend_plot import save_trend_png
from oodfilter.model.clipn import CLIPN
from oodfilter.robustness.objectives import feature_loss, image_features, method_scores, score_loss
from oodfilter.robustness.pgd import Loss, perturbation_norms, pgd_minimise, to_pixel_grid
from oodfilter.scoring.factory import load_spec_model, read_spec_classes
from oodfilter.scoring.methods import ScoreMethod, score_methods
from oodfilter.scoring.scorer import Scorer
from oodfilter.scoring.spec import ScorerSpec
from oodfilter.text.class_vectors import build_class_vectors

logger = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class RobustnessRow:
    """One (objective, method, ε) result.

    Rates are shares in [0, 1] (None: too few ID images to calibrate); norms are in [0, 1] pixel units.
    """

    objective: str
    method: str
    eps: float
    auroc: float
    fpr95: float
    accepted_calibrated: float | None
    accepted_own_rule: float | None
    mean_linf: float
    mean_l2: float
    mean_ood_score: float


@dataclass
class RobustnessReport:
    """The measurement: rows, what was attacked, and what was skipped and why."""

    rows: list[RobustnessRow]
    id_images: int
    ood_images: int
    thresholds: dict[str, float | None]
    steps: int
    target: str
    id_recall: float
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data (the ``robustness`` section of results.json)."""
        return dataclasses.asdict(self)

    def row(self, objective: str, method: str, eps: float) -> RobustnessRow:
        """Return the row of ``objective``, ``method`` and ``eps``."""
        return next(r for r in self.rows if (r.objective, r.method, r.eps) == (objective, method, eps))


@dataclass
class _Images:
    """Decoded images of one set: (N, 3, H, W) uint8 pixels after the model's resize and crop."""

    paths: list[str]
    pixels: torch.Tensor


def robustness(config: RobustnessConfig, *, model: CLIPN | None = None,
               method_objects: dict[str, ScoreMethod] | None = None,
               reference_features: torch.Tensor | None = None, progress: Progress | None = None,
               checked: CheckedRobustness | None = None) -> RobustnessReport:
    """Attack the OOD images and measure every method against them; see the module docstring.

    Args:
        config: What to attack and how.
        model: An already loaded model (else ``config.model`` is loaded).
        method_objects: Configured method instances for some method names (e.g. a NegLabel vocabulary).
        reference_features: Unlabelled ID features for methods that fit on them (PLP); default the ID set's.
        progress: Called with a line of text as each attack finishes.
        checked: :func:`~oodfilter.evaluate.checks.check_robustness` of ``config``, when the caller ran it
            (the CLI does, before importing torch); run here otherwise, before the model loads.

    Raises:
        InputError: bad options, empty sets, an ``out`` folder that holds results (without ``overwrite``), or
            a method asked for by name that cannot run.

    """
    if checked is None:
        checked = check_robustness(config, method_names=method_objects or {}, model_given=model is not None)
    out = Path(config.out) if config.out else None
    spec = robustness_spec(config)
    clipn = (model if model is not None else load_spec_model(spec)).eval()
    split = split_transform(clipn.preprocess)
    if split is None:
        raise InputError("the model's preprocessing does not end in ToTensor + Normalize, so its pixels cannot be "
                         "attacked before normalisation")
    errors: dict[str, str] = {}
    id_images = _decode(checked.id_images, split, errors, "in-distribution", None)
    ood_images = _decode(checked.ood_images, split, errors, "OOD", config.limit)
    device = clipn.device
    id_features = _encode(clipn, split, id_images.pixels, config.batch_size, device)  # (N_id, D)
    reference = reference_features if reference_features is not None else id_features
    scorers, skipped = _scorers(config, clipn, spec, method_objects, reference, checked.class_names)
    id_scores = {name: method_scores(scorer, id_features.to(device))[0].detach().cpu().double()
                 for name, scorer in scorers.items()}
    thresholds, calibration_note = _thresholds(id_scores, config.id_recall)
    report = RobustnessReport(rows=[], id_images=len(id_images.paths), ood_images=len(ood_images.paths),
                              thresholds=thresholds, steps=config.steps, target=config.target,
                              id_recall=config.id_recall, skipped=skipped, errors=errors)
    if calibration_note:
        report.skipped["calibrated acceptance"] = calibration_note
    targets = _targets(config, clipn, scorers, id_features, len(ood_images.paths))
    saved: list[dict[str, Any]] = []
    for objective in config.objectives:
        for eps in config.eps:
            attacked_by = list(scorers) if objective == "score" and eps > 0 else [None]
            for attacker in attacked_by:
                def loss_of(part: slice, attacker: str | None = attacker) -> Loss:
                    if attacker is not None:
                        return score_loss(scorers[attacker], split)
                    return feature_loss(clipn, split, targets[part].to(device))

                try:
                    manipulated = _attack(ood_images.pixels, loss_of, eps, config, device)
                except OODFilterError as error:  # a method whose score carries no gradient
                    report.skipped[f"{objective}:{attacker}"] = str(error)
                    continue
                features = _encode(clipn, split, manipulated, config.batch_size, device)
                linf, l2 = perturbation_norms(ood_images.pixels, manipulated)
                for name in [attacker] if attacker is not None else list(scorers):
                    report.rows.append(_row(objective, name, eps, scorers[name], id_scores[name], thresholds[name],
                                            features, linf, l2, config))
                if out is not None:
                    saved += _save(out, objective, attacker, eps, ood_images, manipulated, linf, l2)
                if progress is not None:
                    progress(f"{objective} attack, eps {eps:g}/255" + (f", {attacker}" if attacker else ""))
    if out is not None:
        _write(out, report, saved)
    return report


def _thresholds(id_scores: dict[str, torch.Tensor], id_recall: float) -> tuple[dict[str, float | None], str]:
    """Per method, the threshold that keeps ``id_recall`` of the ID images (None for all if there are too few)."""
    try:
        return {name: float(recall_threshold(scores.numpy(), id_recall)) for name, scores in id_scores.items()}, ""
    except InputError as error:  # too few ID images for this recall: the rates at it are not reported
        return dict.fromkeys(id_scores), f"not measured: {error}"


def _scorers(config: RobustnessConfig, model: CLIPN, spec: ScorerSpec, given: dict[str, ScoreMethod] | None,
             reference: torch.Tensor, class_names: list[str] | None = None) -> tuple[dict[str, Scorer], dict[str, str]]:
    """One float32 scorer per method, sharing one set of class vectors; methods that cannot run are skipped.

    Methods that fit on unlabelled ID features (PLP, when no fitted probe is cached) fit on ``reference``.
    """
    objects = {name.lower(): method for name, method in (given or {}).items()}
    requested = [m.lower() for m in config.methods] or score_methods.list()
    methods = {name: objects.get(name) or score_methods.create(name) for name in requested}
    needs_no = model.no_branch_trained and any(m.needs_no_branch for m in methods.values())
    names = class_names if class_names is not None else read_spec_classes(spec)
    vectors = build_class_vectors(model, names, templates=spec.templates, cache_dir=spec.cache_dir,
                                  include_no=needs_no, precision="fp32")
    scorers, skipped = {}, {}
    for name, method in methods.items():
        try:
            scorers[name] = Scorer(model, vectors, method, precision="fp32", batch_size=config.batch_size,
                                   cache_dir=config.cache_dir, reference_features=reference)
        except OODFilterError as error:
            if config.methods:
                raise
            skipped[name] = str(error)
    if not scorers:
        raise InputError(f"no method can run with this model: {skipped}")
    return scorers, skipped


def _decode(paths: list[str], split: SplitTransform, errors: dict[str, str], what: str,
            limit: int | None) -> _Images:
    """Decode and resize/crop every image of a set to uint8 pixels; unreadable ones are recorded and left out."""
    kept: list[str] = []
    pixels: list[torch.Tensor] = []
    for path in paths:
        if limit is not None and len(kept) == limit:
            break
        try:
            tensor = split.pixels(load_rgb_image(path))
        except ImageDecodeError as error:
            errors[path] = error.reason
            continue
        if tensor.dtype != torch.uint8:
            raise InputError("the model's preprocessing does not produce 8-bit RGB pixels to perturb")
        kept.append(path)
        pixels.append(tensor)
    if not kept:
        raise InputError(f"the {what} set holds no readable image")
    return _Images(kept, torch.stack(pixels))


@torch.no_grad()
def _encode(model: CLIPN, split: SplitTransform, pixels: torch.Tensor, batch_size: int,
            device: torch.device) -> torch.Tensor:
    """(N, 3, H, W) uint8 → (N, D) float32 normalised features (CPU), through the scan's normalisation."""
    chunks = [image_features(model, split, pixels[i:i + batch_size].to(device).float().div(255)).cpu()
              for i in range(0, len(pixels), batch_size)]
    return torch.cat(chunks)


def _targets(config: RobustnessConfig, model: CLIPN, scorers: dict[str, Scorer], id_features: torch.Tensor,
             count: int) -> torch.Tensor:
    """(count, D) feature-attack targets: a seeded random ID image's feature, or ID class's yes text vector."""
    generator = torch.Generator().manual_seed(config.seed)
    if config.target == "text":
        vectors = next(iter(scorers.values())).class_vectors.yes.float().cpu()  # (C, D)
        return vectors[torch.randint(len(vectors), (count,), generator=generator)]
    return id_features[torch.randint(len(id_features), (count,), generator=generator)]


def _attack(pixels: torch.Tensor, loss_of: Callable[[slice], Loss], eps: float, config: RobustnessConfig,
            device: torch.device) -> torch.Tensor:
    """Attack every image in batches; (N, 3, H, W) uint8 → (N, 3, H, W) uint8 within ε levels."""
    budget = eps / 255
    step = config.step_size / 255 if config.step_size is not None else None
    out = []
    for start in range(0, len(pixels), config.batch_size):
        part = slice(start, start + config.batch_size)
        original = pixels[part]
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + start)
        floats = original.to(device).float().div(255)
        adversarial = pgd_minimise(floats, loss_of(part), eps=budget, steps=config.steps, step_size=step,
                                   generator=generator)
        out.append(to_pixel_grid(original, adversarial.cpu(), budget))
    return torch.cat(out)


def _row(objective: str, name: str, eps: float, scorer: Scorer, id_scores: torch.Tensor, threshold: float | None,
         features: torch.Tensor, linf: torch.Tensor, l2: torch.Tensor, config: RobustnessConfig) -> RobustnessRow:
    with torch.no_grad():
        scores, own = method_scores(scorer, features.to(scorer.device))
    ood = scores.detach().cpu().double().numpy()
    ids = id_scores.numpy()
    return RobustnessRow(
        objective=objective, method=name, eps=eps, auroc=auroc(ids, ood), fpr95=fpr_at_95_tpr(ids, ood),
        accepted_calibrated=None if threshold is None else float((ood <= threshold).mean()),
        accepted_own_rule=None if own is None else float((~own.cpu()).double().mean()),
        mean_linf=float(linf.mean()), mean_l2=float(l2.mean()), mean_ood_score=float(ood.mean()))


def _save(out: Path, objective: str, attacker: str | None, eps: float, images: _Images, manipulated: torch.Tensor,
          linf: torch.Tensor, l2: torch.Tensor) -> list[dict[str, Any]]:
    """Write the manipulated images as lossless PNGs; return their manifest entries."""
    folder = out / "images" / objective / (attacker or "all") / f"eps{eps:g}"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, source in enumerate(images.paths):
        target = folder / f"{index:06d}.png"
        Image.fromarray(manipulated[index].permute(1, 2, 0).numpy()).save(target, format="PNG")
        entries.append({"path": str(target), "source": source, "objective": objective, "attacked_method": attacker,
                        "eps": eps, "linf": float(linf[index]), "l2": float(l2[index])})
    return entries


def _write(out: Path, report: RobustnessReport, saved: list[dict[str, Any]]) -> None:
    """Write robustness.json (the report), images.jsonl (the manipulated images) and the AUROC-vs-ε plots."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json", json.dumps({"robustness": report.to_json()}, indent=2))
    atomic_write_text(out / "images.jsonl", "".join(json.dumps(entry) + "\n" for entry in saved))
    for objective in sorted({row.objective for row in report.rows}):
        lines: dict[str, list[tuple[float, float]]] = {}
        for row in report.rows:
            if row.objective == objective:
                lines.setdefault(row.method, []).append((row.eps, 100 * row.auroc))
        save_trend_png(lines, out / f"auroc_vs_eps_{objective}.png",
                       title=f"AUROC (%) of ID vs manipulated OOD, {objective} attack", x_label="eps (/255)")


def markdown_table(report: RobustnessReport) -> str:
    """Return the report as a Markdown table (AUROC, FPR95, accepted shares in %, norms in 8-bit levels)."""
    lines = ["| objective | method | eps (/255) | AUROC | FPR95 | accepted (calibrated) | accepted (own rule) | "
             "mean L∞ (/255) | mean L2 (/255) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report.rows:
        own = "n/a" if row.accepted_own_rule is None else f"{100 * row.accepted_own_rule:.1f}"
        calibrated = "n/a" if row.accepted_calibrated is None else f"{100 * row.accepted_calibrated:.1f}"
        lines.append(f"| {row.objective} | {row.method} | {row.eps:g} | {100 * row.auroc:.2f} | {100 * row.fpr95:.2f} "
                     f"| {calibrated} | {own} | {255 * row.mean_linf:.2f} | "
                     f"{255 * row.mean_l2:.1f} |")
    return "\n".join(lines) + "\n"
