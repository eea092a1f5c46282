"""Pick the dataset-aware pass's defaults (``oodfilter rescore --adapt``) on a dev mixture, never the test sets.

Run:   OODFILTER_SHARED_DATA=/work/shared/data python benchmarks/world/adapt_defaults.py [--seeds 0 1 2] [--out DIR]
Smoke: python benchmarks/world/adapt_defaults.py --quick --out /tmp/adapt        (< 2 min; pipeline check only)

Needs world A's models cached (``benchmarks/world/run.py`` builds them). The dev data are Tiny-ImageNet
*training* images only: ID = the 100 ID classes' training images, OOD = the other 100 classes' training
images (the held-out images and DTD are the test sets of ``run.py`` and ``dataset_aware.py``). Per seed
and method, datasets of 3000 ID images with 0, 10, 30 and 50% OOD are scored by the first pass alone
and by the pass under a few settings; the figure is the AUROC (ID vs OOD) within the dataset. For the
clean dataset (0% OOD) there is no OOD inside it: 1000 OOD training images outside it are scored against
the proxies the clean dataset produced (``score_with_proxies``), and the AUROC is ID of the dataset vs
those, so a pass that hurts a clean dataset shows as a lower figure there. Writes ``adapt_defaults.json``
(the configuration and the figures per seed) into --out.

``--quick`` runs every setting on run.py's quick world (seed 0, its 20 ID and 20 OOD training images: all
ID images, half the OOD ones as the probe), building what its cache lacks; its figures mean nothing.

Measured (seeds 0-2, mean AUROC; 2 shared AMD EPYC cores, ~3.5 min): first pass only vs the defaults
(2% seeds, no positive proxies) vs the first defaults (5%, 16-image positives):
atd 10/30/50% OOD 0.948/0.953/0.955 vs 0.929/0.926/0.919 vs 0.925/0.912/0.903; atd clean: unchanged
(its rule rated no image OOD); mcm 10/30/50% 0.962/0.966/0.968 vs 0.942/0.939/0.936 vs 0.926/0.925/0.923;
mcm clean (vs outside OOD) 0.970 vs 0.909 vs 0.861. The pass did not beat the first pass in any case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

import oodfilter
from benchmarks.world.build import WORLD_TEMPLATES, load_feature_bank
from benchmarks.world.data import load_world_data
from benchmarks.world.evaluation import make_scorer
from benchmarks.world.run import QUICK_DATA, TEMPLATES, generic_no_branch_model
from oodfilter.evaluate.metrics import auroc, fpr_at_95_tpr
from oodfilter.scoring.adaptive import AdaptConfig, adaptive_scores, score_with_proxies

SETTINGS: dict[str, AdaptConfig | None] = {
    "first pass only": None,
    "default (2%, no positives)": AdaptConfig(),
    "2%, positives 16": AdaptConfig(positives_per_class=16),
    "5%, no positives": AdaptConfig(negative_fraction=0.05),
    "5%, positives 16 (first default)": AdaptConfig(negative_fraction=0.05, positives_per_class=16),
    "2%, no positives, no shift": AdaptConfig(shift=False),
}
ID_IMAGES, PROBE = 3000, 1000
SHARES = (0.0, 0.1, 0.3, 0.5)


def _figures(scorer: oodfilter.Scorer, config: AdaptConfig | None, data: np.ndarray, ood: np.ndarray,
             probe: np.ndarray) -> dict[str, float]:
    """AUROC and FPR95 of one dataset (``ood`` marks its OOD rows), or vs ``probe`` when it has none."""
    features = np.ascontiguousarray(data)
    if config is None:
        scores = scorer.score_features(torch.from_numpy(features)).ood_score.numpy()
        extra = scorer.score_features(torch.from_numpy(probe)).ood_score.numpy()
        meta: dict = {}
    else:
        result = adaptive_scores(scorer, features, config)
        scores, meta = result.ood_score, result.meta
        extra = score_with_proxies(scorer, result.proxies, torch.from_numpy(probe)) if not ood.any() else None
    if ood.any():
        inside, outside = scores[~ood], scores[ood]
    else:
        inside, outside = scores, extra
    return {"auroc": auroc(inside.astype(np.float64), outside.astype(np.float64)),
            "fpr95": fpr_at_95_tpr(inside.astype(np.float64), outside.astype(np.float64)),
            "negatives": meta.get("negatives", 0), "seeds": meta.get("negative_seeds", 0)}


def run_seed(seed: int, data, bank, cache: Path, methods: list[str], quick: bool = False,
             trees: Path = Path("/tmp/adapt-defaults-trees")) -> dict:
    """Every method, mixture and setting on world A of ``seed`` with its generic no-branch.

    ``quick``: the quick world's no-branch, and its few images (all ID ones, half the OOD ones as the probe).
    """
    model = generic_no_branch_model(data, bank, cache, seed, quick, trees)
    names = [data.names[c] for c in data.id_classes]
    chosen = set(data.id_classes)
    head = model.clip.visual.head
    with torch.no_grad():
        def encode(items) -> np.ndarray:
            pooled = torch.stack([bank.pooled[i.path] for i in items])
            return torch.nn.functional.normalize(head(pooled), dim=-1).numpy().astype(np.float32)
        id_all = encode([i for i in data.train if i.label in chosen])
        ood_all = encode([i for i in data.train if i.label not in chosen])
    id_images, probe_size = (len(id_all), len(ood_all) // 2) if quick else (ID_IMAGES, PROBE)
    rng = np.random.default_rng(seed)
    id_rows = id_all[rng.permutation(len(id_all))[:id_images]]
    ood_order = rng.permutation(len(ood_all))
    probe = ood_all[ood_order[:probe_size]]
    pool = ood_all[ood_order[probe_size:]]
    out: dict = {}
    for method in methods:
        scorer = make_scorer(model, names, method, cache, TEMPLATES)
        for share in SHARES:
            count = min(len(pool), round(id_images * share / (1 - share)))
            mixed = np.concatenate([id_rows, pool[:count]])
            ood = np.r_[np.zeros(id_images, bool), np.ones(count, bool)]
            order = rng.permutation(len(mixed))
            for name, config in SETTINGS.items():
                out[f"{method} {int(share * 100)}% {name}"] = _figures(scorer, config, mixed[order], ood[order], probe)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["atd", "mcm"])
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "world"))
    parser.add_argument("--out", default="adapt_defaults_results", help="folder for adapt_defaults.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run on the quick world, seed 0 (< 2 min)")
    args = parser.parse_args()
    if args.quick:
        args.seeds = [0]
    torch.set_num_threads(2)
    started = time.perf_counter()
    data = load_world_data(**QUICK_DATA) if args.quick else load_world_data()  # as run.py builds them
    templates = WORLD_TEMPLATES[:2] if args.quick else WORLD_TEMPLATES
    bank = load_feature_bank(data, Path(args.cache_dir), templates=templates, log=print)
    with tempfile.TemporaryDirectory() as quick_trees:  # a fresh link tree: the quick world's images only
        trees = Path(quick_trees) if args.quick else Path("/tmp/adapt-defaults-trees")
        results = {seed: run_seed(seed, data, bank, Path(args.cache_dir), args.methods, args.quick, trees)
                   for seed in args.seeds}
    id_train = sum(i.label in set(data.id_classes) for i in data.train)
    config = {"quick": args.quick, "seeds": args.seeds, "methods": args.methods, "shares": list(SHARES),
              "id_images": id_train if args.quick else ID_IMAGES,
              "probe": (len(data.train) - id_train) // 2 if args.quick else PROBE,
              "settings": {name: None if c is None else dataclasses.asdict(c) for name, c in SETTINGS.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapt_defaults.json").write_text(json.dumps({"config": config, "results": results}, indent=1))
    keys = list(results[args.seeds[0]])
    print(f"{'case':50s} " + " ".join(f"seed{s} auroc/fpr95" for s in args.seeds) + "  mean auroc")
    for key in keys:
        cells = [results[s][key] for s in args.seeds]
        mean = np.mean([c["auroc"] for c in cells])
        print(f"{key:50s} " + " ".join(f"{c['auroc']:.4f}/{c['fpr95']:.3f} (K={c['negatives']})" for c in cells)
              + f"  {mean:.4f}")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
