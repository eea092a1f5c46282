"""Scoring a world's evaluation sets with oodfilter's own scorers, from cached image features.

A world's image tower is the frozen backbone plus its trained projection, so every model built on one
world (the base model, a no-branch trained generically, one trained on the new vocabulary) has the same
image features: they are computed once from the cached backbone features, and :func:`check_against_scan`
shows they equal what ``oodfilter.score_files`` computes from the image files. Metrics come from
``oodfilter.evaluate.metrics``, as ``oodfilter eval`` reports them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import oodfilter
from benchmarks.world.build import FeatureBank
from benchmarks.world.data import AMBIGUOUS_TEXTURES, WorldData
from oodfilter.evaluate.metrics import aupr_in, aupr_out, auroc, fpr_at_95_tpr
from oodfilter.scoring.methods import ScoreMethod

OOD_SETS = ("near", "dtd", "dtd-8")


@dataclass
class EvalSets:
    """The evaluation images of a world, as files and as world image features (N, D)."""

    files: dict[str, list[Path]]  # set → files; sets: id, near, dtd, dtd-8, id-train
    id_labels: torch.Tensor  # (N_id,) index into the ID class list
    id_held_classes: torch.Tensor  # (N_id,) Tiny class of each ID image

    def features(self, model: oodfilter.CLIPN, bank: FeatureBank) -> dict[str, torch.Tensor]:
        """Normalised image features of every set under ``model``'s image head."""
        head = model.clip.visual.head
        with torch.no_grad():
            return {name: F.normalize(head(torch.stack([bank.pooled[f] for f in files])), dim=-1)
                    for name, files in self.files.items()}


def eval_sets(data: WorldData) -> EvalSets:
    """ID = held-out images of the ID classes; near = those of the other classes; DTD all and without the
    two ambiguous classes; ``id-train`` = the ID classes' training images (unlabelled, for PLP)."""
    position = {c: i for i, c in enumerate(data.id_classes)}
    held_id = [i for i in data.held_out if i.label in position]
    files = {"id": [i.path for i in held_id],
             "near": [i.path for i in data.held_out if i.label not in position],
             "dtd": [f for f, _ in data.textures],
             "dtd-8": [f for f, kind in data.textures if kind not in AMBIGUOUS_TEXTURES],
             "id-train": [i.path for i in data.train if i.label in position]}
    return EvalSets(files, torch.tensor([position[i.label] for i in held_id]),
                    torch.tensor([i.label for i in held_id]))


def set_metrics(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, float]:
    """AUROC, FPR95 (CLIPN and OpenOOD conventions), AUPR-in and AUPR-out, in [0, 1]."""
    a, b = id_scores.numpy(), ood_scores.numpy()
    return {"auroc": auroc(a, b), "fpr95": fpr_at_95_tpr(a, b),
            "fpr95_openood": fpr_at_95_tpr(a, b, convention="openood"), "aupr_in": aupr_in(a, b),
            "aupr_out": aupr_out(a, b)}


def score_sets(scorer: oodfilter.Scorer, features: dict[str, torch.Tensor]) -> dict[str, oodfilter.ScoreResult]:
    """Score the ID and OOD sets."""
    return {name: scorer.score_features(features[name]) for name in ("id", *OOD_SETS)}


def method_report(results: dict[str, oodfilter.ScoreResult], id_labels: torch.Tensor) -> dict[str, object]:
    """Per OOD set metrics, ID accuracy, and the decision rule's shares when the method has one."""
    report: dict[str, object] = {s: set_metrics(results["id"].ood_score, results[s].ood_score) for s in OOD_SETS}
    report["id_accuracy"] = float((results["id"].top_class == id_labels).float().mean())
    if results["id"].is_ood is not None:
        report["id_kept"] = float((~results["id"].is_ood).float().mean())
        report["ood_caught"] = {s: float(results[s].is_ood.float().mean()) for s in OOD_SETS}  # type: ignore[union-attr]
    return report


def make_scorer(model: oodfilter.CLIPN, names: list[str], method: str | ScoreMethod, cache: Path, templates: str,
                reference: torch.Tensor | None = None, precision: str = "fp32") -> oodfilter.Scorer:
    """oodfilter's scorer for ``names`` (class vectors cached under ``cache``), by default in fp32 like the cached
    image features (``benchmarks/precision.py`` measures what bf16 and int8 change)."""
    vectors = oodfilter.build_class_vectors(model, names, templates=templates, cache_dir=cache,
                                            include_no=model.no_branch_trained, precision=precision)
    return oodfilter.Scorer(model, vectors, method, device="cpu", cache_dir=cache, reference_features=reference,
                            precision=precision)


def check_against_scan(scorer: oodfilter.Scorer, files: list[Path], features: torch.Tensor) -> float:
    """Max |score difference| between scoring ``files`` end to end and scoring their cached features."""
    rows = [row for batch in oodfilter.score_files(scorer, [str(f) for f in files]) for row in batch]
    scanned = torch.tensor([row.ood_score for row in rows])
    return float((scanned - scorer.score_features(features).ood_score).abs().max())


def class_size_sweep(model: oodfilter.CLIPN, data: WorldData, sets: EvalSets, features: dict[str, torch.Tensor],
                     sizes: list[int], methods: list[str], cache: Path, templates: str, seed: int,
                     draws: int) -> dict[str, dict[int, dict[str, float]]]:
    """Share of ID kept and of OOD caught by the threshold-free rules with k ID classes.

    For each k, ``draws`` random k-subsets of the ID classes: ID = their held-out images, OOD = the near-OOD
    set and DTD; the shares are averaged over draws.
    """
    rng = random.Random(seed)
    out: dict[str, dict[int, dict[str, float]]] = {m: {} for m in methods}
    for k in sizes:
        repeats = draws if k < len(data.id_classes) else 1
        subsets = [sorted(rng.sample(range(len(data.id_classes)), k)) for _ in range(repeats)]
        for method in methods:
            totals = {"id_kept": 0.0, "near_caught": 0.0, "dtd_caught": 0.0}
            for subset in subsets:
                names = [data.names[data.id_classes[i]] for i in subset]
                scorer = make_scorer(model, names, method, cache, templates)
                keep = torch.isin(sets.id_labels, torch.tensor(subset))
                totals["id_kept"] += float((~scorer.score_features(features["id"][keep]).is_ood).float().mean())
                totals["near_caught"] += float(scorer.score_features(features["near"]).is_ood.float().mean())
                totals["dtd_caught"] += float(scorer.score_features(features["dtd"]).is_ood.float().mean())
            out[method][k] = {key: value / len(subsets) for key, value in totals.items()}
    return out
