"""A quality benchmark we can run here: a small CLIP world trained from real images.

Run:   python benchmarks/tiny_world/run.py [--seeds 3] [--out tiny_world_results]
Smoke: python benchmarks/tiny_world/run.py --quick --out /tmp/tw   (seconds; checks the pipeline only)

1. Pretrain a small CLIP (ResNet image tower, 64 px, `tiny-world.json`) contrastively, class-aware, on
   Tiny-ImageNet: 40 images per class of all 200 classes (a fixed split by file hash); captions are
   5 templates × up to 3 WordNet names per class. This plays the generic pretrained CLIP. Cached by a
   hash of its config and seed, so re-runs skip it.
2. Train the no-branch with `oodfilter finetune` on the same generic captions (all 200 classes).
3. `oodfilter eval`: ID = the held-out images (10 per class) of the first 100 classes in WordNet-id order;
   near-OOD = the held-out images of the other 100; far-OOD = DTD textures (every other image, 600).
   Methods: MSP, Energy, MaxLogit, MCM, CLIPN-CTW, CLIPN-ATD, NegLabel, PLP (its probe fitted on the
   unlabelled ID training images).
Prints AUROC and FPR95 (CLIPN convention) per OOD set and method, mean ± std over seeds, with the world
model's own accuracy; saves results.json beside.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from data import TEXTURES, World, load_world
from world import pretrain

import oodfilter
from oodfilter.evaluate.runner import EvalConfig, evaluate
from oodfilter.train import FinetuneConfig, finetune

METHODS = ["msp", "energy", "maxlogit", "mcm", "ctw", "atd", "neglabel", "plp"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _-]", "", name).strip() or "class"


def link_tree(root: Path, items: list[tuple[Path, str]]) -> Path:
    """A folder of symbolic links: root/<folder>/<file> for (file, folder) pairs."""
    for file, folder in items:
        target = root / _safe(folder) / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(file)
    return root


def zero_shot_accuracy(model: oodfilter.CLIPN, world: World, files: list[tuple[Path, int]], cache: Path,
                       classes: list[int]) -> float:
    """Top-1 accuracy of the yes classifier over ``classes`` on ``files`` (labels outside are skipped)."""
    names = [world.names[world.wnids[c]][0] for c in classes]
    index = oodfilter.build_class_vectors(model, names, cache_dir=cache, include_no=False)
    scorer = oodfilter.Scorer(model, index, "msp")
    wanted = {c: i for i, c in enumerate(classes)}
    subset = [(p, wanted[c]) for p, c in files if c in wanted]
    rows = [row for batch in oodfilter.score_files(scorer, [str(p) for p, _ in subset]) for row in batch]
    return sum(r.top_class == names[label] for r, (_, label) in zip(rows, subset, strict=True)) / len(subset)


def run_seed(seed: int, args: argparse.Namespace, world: World, work: Path, log) -> dict:
    cache = Path(args.cache_dir)
    started = time.perf_counter()
    base = pretrain(world, cache, seed=seed, epochs=args.world_epochs, batch_size=args.batch_size, log=log)
    all_classes = list(range(len(world.wnids)))
    id_classes = all_classes[: len(all_classes) // 2]
    acc_all = zero_shot_accuracy(base, world, world.held_out, cache, all_classes)
    log(f"seed {seed}: world model {len(all_classes)}-way zero-shot accuracy {acc_all:.3f} "
        f"({time.perf_counter() - started:.0f} s)")

    train_tree = link_tree(work / "train", [(p, world.names[world.wnids[c]][0]) for p, c in world.train])
    run_dir = work / f"clipn-seed{seed}"
    result = finetune(FinetuneConfig(model="tiny-world", data=str(train_tree), out=str(run_dir),
                                     steps=args.finetune_steps, batch_size=args.batch_size, lr=args.finetune_lr,
                                     weight_decay=0.0, workers=1, seed=seed, val_fraction=0.05, log_every=50,
                                     device="cpu", templates=["a photo of a {}."]),
                      model=base)
    model = oodfilter.load_model(run_dir, device="cpu")
    log(f"seed {seed}: no-branch trained {result.steps} steps; held-out separation "
        f"{result.metrics.get('val_ctw_auroc', float('nan')):.3f} ({time.perf_counter() - started:.0f} s)")

    id_names = [world.names[world.wnids[c]][0] for c in id_classes]
    id_dir = link_tree(work / "id", [(p, "id") for p, c in world.held_out if c in id_classes])
    near_dir = link_tree(work / "near-ood", [(p, "near") for p, c in world.held_out if c not in id_classes])
    far_files = sorted(TEXTURES.rglob("*.jpg"))[:: 2 if not args.quick else 40]
    far_dir = link_tree(work / "far-ood-textures", [(p, "far") for p in far_files])
    labels = work / f"id-labels-seed{seed}.tsv"
    labels.write_text("path\tclass_index\n" + "".join(
        f"{id_dir / 'id' / p.name}\t{id_classes.index(c)}\n" for p, c in world.held_out if c in id_classes))

    from oodfilter_plp import fit_plp, probe_cache_path
    from oodfilter_plp.scorer import PLP_TEMPLATES

    plp_index = oodfilter.build_class_vectors(model, id_names, templates=list(PLP_TEMPLATES), cache_dir=cache,
                                           include_no=False)
    scorer = oodfilter.Scorer(model, plp_index, "msp")
    id_train = [str(p) for p, c in world.train if c in id_classes]
    features = scorer.encode_images(torch.stack([model.preprocess(oodfilter.load_rgb_image(p)) for p in id_train]))
    fit_plp(model, plp_index, features).save(probe_cache_path(model.text_fingerprint("yes"), id_names, cache))

    objects = {}
    if args.quick:
        from oodfilter_neglabel import NegLabel, load_vocabulary

        objects["neglabel"] = NegLabel(list(load_vocabulary()[::100]), groups=10)
    report = evaluate(EvalConfig(classes=id_names, id=str(id_dir), ood=[str(near_dir), str(far_dir)],
                                 id_labels=str(labels), methods=METHODS, cache_dir=str(cache), workers=1,
                                 templates="photo",
                                 out=str(work / f"eval-seed{seed}.json")),
                      model=model, method_objects=objects)
    log(f"seed {seed}: evaluated ({time.perf_counter() - started:.0f} s)")
    return {"seed": seed, "world_accuracy": acc_all, "id_accuracy": report.id_accuracy,
            "separation": result.metrics.get("val_ctw_auroc"), "results": report.results, "sets": report.sets}


def mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]  # e.g. an ID accuracy with no labelled image matched
    if not values:
        return "  n/a"
    mean = 100 * statistics.fmean(values)
    return f"{mean:5.1f} ± {100 * statistics.stdev(values):4.1f}" if len(values) > 1 else f"{mean:5.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="tiny_world_results")
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "tiny_world"))
    parser.add_argument("--world-epochs", type=int, default=8)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="a smoke run of the whole pipeline in seconds")
    args = parser.parse_args()
    classes = 200
    if args.quick:
        args.seeds, args.world_epochs, args.finetune_steps, args.batch_size, classes = 1, 1, 2, 32, 20
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = load_world(classes)
    runs = [run_seed(seed, args, world, out / f"work-seed{seed}", log=lambda m: print(m, flush=True))
            for seed in range(args.seeds)]
    sets = runs[0]["sets"]
    print(f"\nTiny world ({classes} classes, 64 px): ID = first {classes // 2} classes' held-out images; "
          f"AUROC / FPR95 in %, mean ± std over {args.seeds} seed(s)")
    print(f"world model {classes}-way zero-shot accuracy: {mean_std([r['world_accuracy'] for r in runs])}; "
          f"ID {classes // 2}-way accuracy of the yes-branch: {mean_std([r['id_accuracy'] for r in runs])}")
    header = f"{'method':<9}" + "".join(f" | {s + ' AUROC':>17} | {s + ' FPR95':>17}" for s in [*sets, "average"])
    print(header)
    print("-" * len(header))
    for method in METHODS:
        cells = []
        for s in [*sets, "average"]:
            cells.append(mean_std([r["results"][method][s]["auroc"] for r in runs if method in r["results"]]))
            cells.append(mean_std([r["results"][method][s]["fpr95"] for r in runs if method in r["results"]]))
        print(f"{method:<9}" + "".join(f" | {c:>17}" for c in cells))
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    print(f"saved {out / 'results.json'}")


if __name__ == "__main__":
    main()
