"""Decisions on the benchmark world: calibrated thresholds per method, and what short class lists do.

Run:   python benchmarks/world/decisions.py [--seeds 3] [--out world_decisions]   (~10 min after run.py, 2 cores)
Smoke: python benchmarks/world/decisions.py --quick --out /tmp/wd                  (~1 min)

Needs the ``bench`` extra, and reuses run.py's cache (worlds, no-branches, text vectors): run that first, or
this builds what it needs. On world A with the generic no-branch, per seed:

1. **Calibration** (``oodfilter.calibrate``): the 1000 held-out ID images are split at random into a
   calibration half and a test half (``--splits`` times); for R in 0.90/0.95/0.99 the threshold fitted on
   the calibration half is applied to the test half (ID recall) and to near-OOD and DTD (FPR = share of OOD
   images kept). Every method, the threshold-free ones included.
2. **Short class lists**: random k-subsets of the ID classes (k = 1, 2, 3, 5, 10, 100); ID = the held-out
   images of those k classes, OOD = near-OOD and DTD. The CTW and ATD rules, against calibrated thresholds
   (R = 0.95) fitted on half of the k classes' held-out images (measured on the other half), and, to show
   the trap, on their training images, which the world's heads were fitted on.
Prints the tables and writes decisions.json and decisions.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

import oodfilter
from benchmarks.world.build import WORLD_TEMPLATES, load_feature_bank
from benchmarks.world.data import load_world_data
from benchmarks.world.evaluation import eval_sets, make_scorer
from benchmarks.world.run import (
    QUICK_DATA,
    TEMPLATES,
    generic_no_branch_model,
    negative_labels,
)
from benchmarks.world.tables import mean_std
from oodfilter.decision import minimum_calibration_images

METHODS = ["msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"]
RECALLS = (0.90, 0.95, 0.99)
SIZES = (1, 2, 3, 5, 10, 100)
# Short-list rows: (label, method, recall or None for the method's own threshold-free rule, calibration images).
# "held-out": half of the k classes' held-out images, measured on the other half (10 per class: from k = 4 on
# there are the 20 a calibration needs); "train": the k classes' training images, which the world's heads
# were fitted on, so they look more in-distribution than new images do: the trap of calibrating on data the
# model was trained on (also after `oodfilter finetune` on your own ID images).
SHORT_LIST_RULES = [("CTW rule", "ctw", None, None), ("ATD rule", "atd", None, None),
                    ("ATD calibrated 95%", "atd", 0.95, "held-out"), ("CTW calibrated 95%", "ctw", 0.95, "held-out"),
                    ("MCM calibrated 95%", "mcm", 0.95, "held-out"),
                    ("ATD calibrated 95% on training images (biased)", "atd", 0.95, "train")]


def _scorer(model, method: str, names: list[str], cache: Path, features: dict, quick: bool) -> oodfilter.Scorer:
    chosen = negative_labels(quick) if method == "neglabel" else method
    templates = "photo" if method == "neglabel" else TEMPLATES
    reference = features["id-train"] if method == "plp" else None
    return make_scorer(model, names, chosen, cache, templates, reference=reference)  # type: ignore[arg-type]


def calibration_study(model, names, features, cache, seed: int, splits: int, quick: bool) -> dict:
    """Per method and recall: test-half ID recall and OOD kept (FPR), over random calibration/test splits."""
    generator = torch.Generator().manual_seed(seed)
    count = len(features["id"])
    halves = [torch.randperm(count, generator=generator) for _ in range(splits)]
    out: dict[str, dict] = {}
    for method in METHODS:
        scorer = _scorer(model, method, names, cache, features, quick)
        scores = {name: scorer.score_features(features[name]).ood_score for name in ("id", "near", "dtd")}
        out[method] = {}
        for recall in RECALLS:
            rows = []
            if count // 2 < minimum_calibration_images(recall):  # the quick run's handful of images
                out[method][str(recall)] = None
                continue
            for order in halves:
                calibration, test = order[: count // 2], order[count // 2:]
                fitted = oodfilter.Calibration.fit(scores["id"][calibration], recall, method=method, identity={})
                rows.append({"recall": float((scores["id"][test] <= fitted.threshold).float().mean()),
                             "near_fpr": float((scores["near"] <= fitted.threshold).float().mean()),
                             "dtd_fpr": float((scores["dtd"] <= fitted.threshold).float().mean())})
            out[method][str(recall)] = {key: statistics.fmean(r[key] for r in rows) for key in rows[0]} | {
                "within_2": statistics.fmean(abs(r["recall"] - recall) <= 0.02 for r in rows)}
    return out


def short_list_study(model, data, sets, features, cache, seed: int, draws: int, sizes, quick: bool) -> dict:
    """Per class-list size and rule: share of ID kept and of near-OOD / DTD caught, averaged over draws."""
    rng = random.Random(seed)
    train_labels = torch.tensor([data.id_classes.index(i.label) for i in data.train if i.label in
                                 set(data.id_classes)])
    out: dict[str, dict] = {label: {} for label, *_ in SHORT_LIST_RULES}
    for k in sizes:
        repeats = draws if k < len(data.id_classes) else 1
        subsets = [sorted(rng.sample(range(len(data.id_classes)), k)) for _ in range(repeats)]
        totals: dict[str, list[dict]] = {label: [] for label, *_ in SHORT_LIST_RULES}
        for subset in subsets:
            names = [data.names[data.id_classes[i]] for i in subset]
            chosen = torch.tensor(subset)
            held = features["id"][torch.isin(sets.id_labels, chosen)]
            order = torch.randperm(len(held), generator=torch.Generator().manual_seed(rng.randrange(2**31)))
            pools = {"held-out": (held[order[: len(held) // 2]], held[order[len(held) // 2:]]),
                     "train": (features["id-train"][torch.isin(train_labels, chosen)], held), None: (None, held)}
            for label, method, recall, source in SHORT_LIST_RULES:
                calibration, test = pools[source]
                if recall is not None and len(calibration) < minimum_calibration_images(recall):
                    continue  # too few images of k classes to calibrate on (reported as n/a)
                scorer = make_scorer(model, names, method, cache, TEMPLATES)
                if recall is not None:
                    scorer.threshold = oodfilter.calibrate(scorer, calibration, recall).threshold
                decide = {name: scorer.score_features(x).is_ood for name, x in
                          (("id", test), ("near", features["near"]), ("dtd", features["dtd"]))}
                totals[label].append({"id_kept": float((~decide["id"]).float().mean()),  # type: ignore[operator]
                                      "near_caught": float(decide["near"].float().mean()),  # type: ignore[union-attr]
                                      "dtd_caught": float(decide["dtd"].float().mean())})  # type: ignore[union-attr]
        for label, rows in totals.items():
            out[label][str(k)] = {key: statistics.fmean(r[key] for r in rows) for key in rows[0]} if rows else None
    return out


def _tables(runs: list[dict], sizes) -> str:
    def pick(*path: str) -> list[float | None]:
        values = []
        for run in runs:
            value = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)  # type: ignore[arg-type]
        return values

    lines = ["**Calibrated thresholds** (fitted on a random half of the held-out ID images, measured on the other "
             "half; mean ± std over seeds of the mean over splits; FPR = share of OOD images kept)", "",
             "| method | R | ID recall | splits within ±2 pts | near-OOD FPR | DTD FPR |", "|---|---|---|---|---|---|"]
    for method in METHODS:
        for recall in RECALLS:
            cells = [mean_std(pick("calibration", method, str(recall), key))
                     for key in ("recall", "within_2", "near_fpr", "dtd_fpr")]
            lines.append(f"| {method} | {recall:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "**Short class lists** (k random ID classes; ID kept / near-OOD caught / DTD caught, %, mean over "
              "draws and seeds; calibrated rows fitted on half of the k classes' held-out images and measured on the "
              "other half, n/a where that half has fewer than the 20 images a calibration needs)", "",
              "| rule | " + " | ".join(f"k = {k}" for k in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for label, *_ in SHORT_LIST_RULES:
        cells = [" / ".join(mean_std(pick("short_lists", label, str(k), key)).split(" ±")[0]
                            for key in ("id_kept", "near_caught", "dtd_caught")) for k in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="world_decisions")
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "world"))
    parser.add_argument("--splits", type=int, default=20, help="random calibration/test splits per seed")
    parser.add_argument("--draws", type=int, default=10, help="random class subsets per list size")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny data, 2-step no-branch)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cache, out = Path(args.cache_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    quick = args.quick
    # quick: 10 classes with all their images, so the calibration halves (25) reach the 20-image minimum
    data = load_world_data(**{**QUICK_DATA, "per_class": None}) if quick else load_world_data()
    bank = load_feature_bank(data, cache, templates=WORLD_TEMPLATES[:2] if quick else WORLD_TEMPLATES)
    seeds, sizes = (1, (1, 2)) if quick else (args.seeds, SIZES)
    runs = []
    for seed in range(seeds):
        model = generic_no_branch_model(data, bank, cache, seed, quick, out / f"seed{seed}")
        sets = eval_sets(data)
        features = sets.features(model, bank)
        names = [data.names[c] for c in data.id_classes]
        run = {"seed": seed, "calibration": calibration_study(model, names, features, cache, seed,
                                                              2 if quick else args.splits, quick),
               "short_lists": short_list_study(model, data, sets, features, cache, seed, 1 if quick else args.draws,
                                               sizes, quick)}
        runs.append(run)
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
    text = _tables(runs, sizes)
    print(text)
    (out / "decisions.md").write_text(text + "\n")
    (out / "decisions.json").write_text(json.dumps({"args": vars(args), "runs": runs,
                                                    "seconds": time.perf_counter() - started}, indent=1))


if __name__ == "__main__":
    main()
