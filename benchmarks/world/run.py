"""The quality benchmark: OOD detection on a world built from two pretrained towers (see README.md).

Run:   python benchmarks/world/run.py [--seeds 3] [--out world_results]      (~45 min, 2 cores)
Smoke: python benchmarks/world/run.py --quick --out /tmp/world               (< 2 min; pipeline check only)

Needs the ``bench`` extra: pip install -e ".[bench]".
1. World A (heads trained on captions of all 200 Tiny classes) and world B (the 100 ID classes only),
   per seed, from cached frozen-tower features.
2. CLIPN's no-branch trained with ``oodfilter finetune`` two ways: *generic* (ImageNet-sample images of
   the 800 classes outside Tiny-ImageNet, template captions) and *new vocabulary* (the 100 ID classes'
   training images and names only).
3. Every method scored by oodfilter's scorers: ID = held-out images of the 100 ID classes, near-OOD = those
   of the other 100, far-OOD = DTD with and without bubbly/cobwebbed; plus the threshold-free decisions
   and how they change with the class-list size.
Prints the tables and writes results.json and tables.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

import oodfilter
from benchmarks.world.build import WORLD_TEMPLATES, FeatureBank, World, build_world, load_feature_bank
from benchmarks.world.data import LabelledImage, WorldData, load_world_data
from benchmarks.world.evaluation import (
    check_against_scan,
    class_size_sweep,
    eval_sets,
    make_scorer,
    method_report,
    score_sets,
)
from benchmarks.world.heads import HeadRecipe
from benchmarks.world.tables import write_tables
from oodfilter.train import FinetuneConfig, finetune

YES_METHODS = ["msp", "maxlogit", "energy", "mcm", "neglabel", "plp"]
CLIPN_METHODS = ["ctw", "atd"]
TEMPLATES = "ensemble"  # the 7 CLIP templates; the heads trained on 16 that include them
# The quick run's slice of the data: 10 Tiny classes of 5 images, 20 DTD and 20 ImageNet-sample images.
# The no-branch recipe (see investigate.py for the others tried).
STEPS, BATCH_SIZE, LEARNING_RATE = 180, 32, 1e-4
QUICK_DATA = {"classes": 10, "per_class": 5, "textures_every": 60, "imagenet_every": 50}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _-]", "", name).strip() or "class"


def link_tree(root: Path, items: list[LabelledImage], names: list[str]) -> Path:
    """An image-folder tree of symbolic links, ``root/<class name>/<file>``, for ``oodfilter finetune``."""
    for item in items:
        target = root / _safe(names[item.label]) / item.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_symlink():
            target.symlink_to(item.path)
    return root


def train_no_branch(world: World, tree: Path, out: Path, args: argparse.Namespace, seed: int) -> tuple[Path, dict]:
    """``oodfilter finetune`` of the world's no-branch on an image-folder tree; the bundle and its figures."""
    record = out / "finetune.json"
    if record.is_file():
        return out, json.loads(record.read_text())
    shutil.rmtree(out, ignore_errors=True)  # a run cut short leaves a partial folder in the cache
    started = time.perf_counter()
    model = oodfilter.load_model(world.model_name, device="cpu")
    result = finetune(FinetuneConfig(model=world.model_name, data=str(tree), out=str(out), steps=args.steps,
                                     batch_size=args.batch_size, lr=args.lr, weight_decay=0.0, warmup_steps=0,
                                     workers=1, seed=seed, val_fraction=0.1, val_every=max(1, args.steps // 4),
                                     log_every=max(1, args.steps // 4), device="cpu", templates=TEMPLATES),
                      model=model)
    figures = {"steps": result.steps, "seconds": time.perf_counter() - started,
               "val_ctw_auroc": result.metrics.get("val_ctw_auroc"), "val_loss": result.metrics.get("val_loss")}
    record.write_text(json.dumps(figures))
    return out, figures


def generic_no_branch_model(data: WorldData, bank: FeatureBank, cache: Path, seed: int, quick: bool,
                            trees: Path) -> oodfilter.CLIPN:
    """World A of ``seed`` with its no-branch fine-tuned generically by the default recipe (2 steps in a quick
    run), both cached under ``cache``; the link tree of its training images goes under ``trees``."""
    recipe = argparse.Namespace(steps=2, batch_size=8, lr=LEARNING_RATE) if quick else \
        argparse.Namespace(steps=STEPS, batch_size=BATCH_SIZE, lr=LEARNING_RATE)
    world = build_world("A", seed, data, bank, cache, HeadRecipe(epochs=2 if quick else 60))
    tree = link_tree(trees / "generic-tree", data.generic, data.imagenet_names)
    bundle, _ = train_no_branch(world, tree, cache / f"no-branch-generic-{world.folder.name}-{recipe.steps}-"
                                f"{recipe.batch_size}-{recipe.lr}", recipe, seed)
    return oodfilter.load_model(bundle, device="cpu")


def negative_labels(quick: bool) -> object:
    """NegLabel over every other word of the shipped vocabulary (every 200th in the quick run).

    Half the 67k words keeps the run within its time budget: the candidates are encoded anew for each
    world seed (its text head differs), ~140 s per seed for 33.5k captions on 2 cores.
    """
    from oodfilter_neglabel import NegLabel, load_vocabulary

    words = list(load_vocabulary())
    return NegLabel(words[::200], groups=10) if quick else NegLabel(words[::2])


def score_world(model: oodfilter.CLIPN, names: list[str], methods: list[str], features: dict[str, torch.Tensor],
                sets, cache: Path, quick: bool, templates: str = TEMPLATES) -> dict[str, dict]:
    """Reports of ``methods`` on one model (NegLabel with its paper's single template)."""
    reports = {}
    for method in methods:
        chosen = negative_labels(quick) if method == "neglabel" else method
        templates = "photo" if method == "neglabel" else templates
        reference = features["id-train"] if method == "plp" else None
        scorer = make_scorer(model, names, chosen, cache, templates, reference=reference)  # type: ignore[arg-type]
        reports[method] = method_report(score_sets(scorer, features), sets.id_labels)
    return reports


def run_seed(seed: int, data: WorldData, bank, args: argparse.Namespace, log) -> dict:
    """World A and B, the two no-branches, every method and the class-size sweep for one seed."""
    cache, work = Path(args.cache_dir), Path(args.out) / f"seed{seed}"
    recipe = HeadRecipe(epochs=args.world_epochs)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    world_a = build_world("A", seed, data, bank, cache, recipe, log=log)
    world_b = build_world("B", seed, data, bank, cache, recipe, log=log)
    timings["worlds"] = time.perf_counter() - started
    names = [data.names[c] for c in data.id_classes]
    sets = eval_sets(data)
    base = oodfilter.load_model(world_a.model_name, device="cpu")
    features = sets.features(base, bank)
    reports = {"A": score_world(base, names, YES_METHODS, features, sets, cache, args.quick)}
    model_b = oodfilter.load_model(world_b.model_name, device="cpu")
    reports["B"] = score_world(model_b, names, ["mcm"], sets.features(model_b, bank), sets, cache, args.quick)
    timings["score_yes"] = time.perf_counter() - started - timings["worlds"]
    trees = {"generic": link_tree(work / "generic-tree", data.generic, data.imagenet_names),
             "new-vocabulary": link_tree(work / "id-tree", [i for i in data.train if i.label in set(data.id_classes)],
                                         data.names)}
    training, sweeps, check = {}, {}, None
    for variant, tree in trees.items():
        mark = time.perf_counter()
        bundle, training[variant] = train_no_branch(world_a, tree, cache / f"no-branch-{variant}-{world_a.folder.name}-"
                                                    f"{args.steps}-{args.batch_size}-{args.lr}", args, seed)
        log(f"seed {seed}: {variant} no-branch: held-out separation {training[variant]['val_ctw_auroc']} "
            f"({training[variant]['seconds']:.0f} s)")
        model = oodfilter.load_model(bundle, device="cpu")
        reports[variant] = score_world(model, names, CLIPN_METHODS, features, sets, cache, args.quick)
        sweeps[variant] = class_size_sweep(model, data, sets, features, args.sizes, CLIPN_METHODS, cache, TEMPLATES,
                                           seed, draws=args.draws)
        if check is None:
            scorer = make_scorer(model, names, "atd", cache, TEMPLATES)
            count = min(64, len(sets.files["id"]))
            check = check_against_scan(scorer, sets.files["id"][:count], features["id"][:count])
        timings[f"finetune+score {variant}"] = time.perf_counter() - mark
    log(f"seed {seed}: done in {time.perf_counter() - started:.0f} s; scan vs cached features max |diff| {check:.2e}")
    return {"seed": seed, "worlds": {"A": world_a.metrics, "B": world_b.metrics}, "reports": reports,
            "training": training, "sweeps": sweeps, "scan_check": check, "timings": timings}


def parse_args() -> argparse.Namespace:
    """Command-line options (``--quick`` shrinks everything to a pipeline check)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="world_results")
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "world"))
    parser.add_argument("--world-epochs", type=int, default=60)
    parser.add_argument("--steps", type=int, default=STEPS, help="no-branch fine-tuning steps")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=LEARNING_RATE)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 5, 10, 100])
    parser.add_argument("--draws", type=int, default=5, help="random class subsets per list size")
    parser.add_argument("--quick", action="store_true", help="a smoke run of the whole pipeline (< 2 min)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.world_epochs, args.steps, args.batch_size, args.sizes, args.draws = 1, 2, 2, 8, [1, 2, 5], 1
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    log = lambda message: print(message, flush=True)  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_world_data(**QUICK_DATA) if args.quick else load_world_data()
    templates = WORLD_TEMPLATES[:2] if args.quick else WORLD_TEMPLATES
    bank = load_feature_bank(data, Path(args.cache_dir), templates=templates, log=log)
    feature_seconds = time.perf_counter() - started
    log(f"frozen-tower features ready ({feature_seconds:.0f} s)")
    runs = [run_seed(seed, data, bank, args, log) for seed in range(args.seeds)]
    results = {"args": vars(args), "feature_seconds": feature_seconds, "runs": runs,
               "total_seconds": time.perf_counter() - started}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(write_tables(results, out / "tables.md"))
    log(f"saved {out / 'results.json'} and {out / 'tables.md'} ({results['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
