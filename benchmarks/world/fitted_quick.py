"""Quick figure of the reference-fitted methods (knn, mahalanobis) on one benchmark world, beside MCM.

Run:   python benchmarks/world/fitted_quick.py [--seed 0] [--out fitted_results]   (~30 s from a built world cache)
Smoke: python benchmarks/world/fitted_quick.py --quick --out /tmp/fitted                (< 2 min; pipeline check only)

Reuses the world cache (``~/.cache/oodfilter/world``: world A of the seed and the frozen-tower features)
that ``benchmarks/world/run.py`` builds; builds what is missing (then it takes as long as run.py's
first steps). Reference = the 100 ID classes' training images (unlabelled); ID = their held-out images;
near-OOD = held-out images of the other 100 Tiny classes; DTD = all textures. The full table of every
method over seeds and mixtures is ``benchmarks/world/dataset_aware.py``'s job. Prints one line per method
and writes ``fitted.json`` into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

import oodfilter
from benchmarks.world.build import WORLD_TEMPLATES, build_world, load_feature_bank
from benchmarks.world.data import load_world_data
from benchmarks.world.evaluation import eval_sets, make_scorer, method_report, score_sets
from benchmarks.world.heads import HeadRecipe
from benchmarks.world.run import QUICK_DATA, TEMPLATES
from oodfilter.scoring.fitted import KNN, Mahalanobis
from oodfilter.scoring.methods import ScoreMethod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "world"))
    parser.add_argument("--out", default="fitted_results")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a small world (< 2 min)")
    args = parser.parse_args()
    cache = Path(args.cache_dir)
    data = load_world_data(**QUICK_DATA) if args.quick else load_world_data()  # as run.py builds them
    templates = WORLD_TEMPLATES[:2] if args.quick else WORLD_TEMPLATES
    bank = load_feature_bank(data, cache, templates=templates, log=print)
    world = build_world("A", args.seed, data, bank, cache, HeadRecipe(epochs=2 if args.quick else 60), log=print)
    names = [data.names[c] for c in data.id_classes]
    sets = eval_sets(data)
    model = oodfilter.load_model(world.model_name, device="cpu")
    features = sets.features(model, bank)
    reference = features["id-train"]
    methods: list[tuple[str, str | ScoreMethod]] = [
        ("mcm", "mcm"), ("knn (default k)", KNN()), ("knn k=10", KNN(min(10, len(reference)))),
        ("mahalanobis pseudo", Mahalanobis()), ("mahalanobis single", Mahalanobis(labels="single"))]
    print(f"world A seed {args.seed}: reference {tuple(reference.shape)}, ID {len(features['id'])}, "
          f"near {len(features['near'])}, DTD {len(features['dtd'])}")
    results: dict[str, dict[str, object]] = {}
    for label, method in methods:
        started = time.perf_counter()
        fitted = reference if label != "mcm" else None
        scorer = make_scorer(model, names, method, cache, TEMPLATES, reference=fitted)
        report = method_report(score_sets(scorer, features), sets.id_labels)
        near, dtd = report["near"], report["dtd"]
        meta = getattr(scorer.method, "fitted_meta", dict)()
        print(f"{label:20s} near AUROC {near['auroc']:.4f} FPR95 {near['fpr95']:.4f} | "  # type: ignore[index]
              f"DTD AUROC {dtd['auroc']:.4f} FPR95 {dtd['fpr95']:.4f}  {meta} "  # type: ignore[index]
              f"({time.perf_counter() - started:.1f} s)", flush=True)
        results[label] = {"near": near, "dtd": dtd, "fit": meta}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fitted.json").write_text(json.dumps({"seed": args.seed, "reference": len(reference), "methods": results},
                                                indent=2))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
