"""Adversarially manipulated OOD images on the benchmark world: does each method still filter them?

Run:   python benchmarks/world/robustness.py [--ood-images 200] [--steps 10] [--out robustness_results]
Smoke: python benchmarks/world/robustness.py --quick --out /tmp/robustness

World A (seed 0) with its generic no-branch (``run.py``'s recipe and cache). ID = the held-out images of the
100 ID classes (clean); OOD = the first ``--ood-images`` held-out near-OOD images (the other 100 Tiny
classes), perturbed by ``oodfilter.evaluate.robustness`` within ε ∈ {0, 1, 2, 4, 8}/255 (PGD, random start,
``--steps`` steps, step 2.5ε/steps, float32): the *feature* attack pushes each image's feature towards a
random ID image's feature (one manipulated set scored by every method), the *score* attack minimises each
method's own score (white-box). Methods: MSP, MaxLogit, Energy, MCM, NegLabel, PLP, CTW, ATD; PLP's probe
fits on the ID training images' features; class vectors with the ensemble templates for every method.
Writes robustness.md (the table) and robustness.json into --out, with the plots and the images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import oodfilter
from benchmarks.world.build import WORLD_TEMPLATES, load_feature_bank
from benchmarks.world.data import load_world_data
from benchmarks.world.evaluation import eval_sets
from benchmarks.world.run import QUICK_DATA, TEMPLATES, generic_no_branch_model, negative_labels
from oodfilter.evaluate.robustness import markdown_table, robustness
from oodfilter.evaluate.robustness_config import RobustnessConfig

METHODS = ["msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"]


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ood-images", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", default="0,1,2,4,8", help="budgets in 8-bit levels")
    parser.add_argument("--out", default="robustness_results")
    parser.add_argument("--cache-dir", default=None, help="the world's cache (default: run.py's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: the quick world, 6 OOD images, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.ood_images, args.steps, args.eps = min(args.ood_images, 6), min(args.steps, 2), "0,4"
    return args


def main() -> None:
    """Build (or load) the world, attack, print and write the table."""
    args = parse_args()
    cache = Path(args.cache_dir) if args.cache_dir else oodfilter.text.default_cache_dir() / "world"
    data = load_world_data(**QUICK_DATA) if args.quick else load_world_data()
    bank = load_feature_bank(data, cache, templates=WORLD_TEMPLATES[:2] if args.quick else WORLD_TEMPLATES)
    with tempfile.TemporaryDirectory() as tmp:
        model = generic_no_branch_model(data, bank, cache, 0, args.quick, Path(tmp))
    sets = eval_sets(data)
    names = [data.names[c] for c in data.id_classes]
    reference = sets.features(model, bank)["id-train"]  # PLP's probe: the ID training images, unlabelled
    out = Path(args.out)
    config = RobustnessConfig(model="world", classes=names, id=[str(f) for f in sets.files["id"]],
                              ood=[str(f) for f in sets.files["near"]], methods=METHODS,
                              eps=[float(e) for e in args.eps.split(",")], steps=args.steps, limit=args.ood_images,
                              templates=TEMPLATES, cache_dir=str(cache), out=str(out), overwrite=True, batch_size=50,
                              device="cpu")
    started = time.perf_counter()
    report = robustness(config, model=model, method_objects={"neglabel": negative_labels(args.quick)},
                        reference_features=reference,
                        progress=lambda line: print(f"  {line} ({time.perf_counter() - started:.0f} s)", flush=True))
    table = markdown_table(report)
    summary = (f"World A seed 0, generic no-branch; {report.id_images} clean ID images, {report.ood_images} near-OOD "
               f"images attacked; {report.steps} PGD steps; {time.perf_counter() - started:.0f} s on "
               f"{os.cpu_count()} cores.\n")
    (out / "robustness.md").write_text(summary + "\n" + table)
    print(summary)
    print(table)
    for name, reason in report.skipped.items():
        print(f"skipped {name}: {reason}")


if __name__ == "__main__":
    main()
