"""Why CLIPN does or does not beat MCM on the world: CTW/ATD under variants of the no-branch recipe.

Run:   python benchmarks/world/investigate.py [--seed 0] [--out world_investigation]   (~35 min, 2 cores)
Smoke: python benchmarks/world/investigate.py --quick --out /tmp/wi                   (< 1 min)

On world A (the seed given), trains the generic no-branch with ``oodfilter finetune`` under several
recipes (steps, batch size, learning rate) and scores each with CTW and ATD, plus scoring-time variants of the
default recipe (the evaluation templates; the logit scale CTW/ATD use). MCM on the same world is the
reference row. Prints AUROC / FPR95 on near-OOD and DTD, the held-out separation of each training, and
the share of ID kept / OOD caught by the rules. Trainings are cached with the world.
"""

from __future__ import annotations

import argparse
import json
import math
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
from benchmarks.world.run import QUICK_DATA, TEMPLATES, link_tree, score_world, train_no_branch
from benchmarks.world.tables import mean_std

# (name, steps, batch size, learning rate): the recipes tried; the first is run.py's default.
RECIPES = [("default (180 steps of 32, lr 1e-4)", 180, 32, 1e-4), ("60 steps of 64, lr 1e-4", 60, 64, 1e-4),
           ("60 steps of 64, lr 1e-3", 60, 64, 1e-3), ("60 steps of 64, lr 1e-5", 60, 64, 1e-5),
           ("180 steps of 64, lr 1e-4 (twice the compute)", 180, 64, 1e-4)]


def _row(name: str, report: dict, separation: float | None) -> str:
    cells = [mean_std([report["near"]["auroc"]]), mean_std([report["near"]["fpr95"]]),
             mean_std([report["dtd"]["auroc"]]), mean_std([report["dtd"]["fpr95"]])]
    kept = " / ".join(mean_std([v]) for v in [report.get("id_kept"), *(report.get("ood_caught") or {}).values()][:3])
    return f"| {name} | " + " | ".join(cells) + f" | {kept or 'n/a'} | {mean_std([separation])} |"


def _neglabel_row(model: oodfilter.CLIPN, data, names: list[str], features: dict[str, torch.Tensor], sets,
                  cache: Path, quick: bool) -> str:
    """NegLabel with a vocabulary the world's text head was trained on: the ImageNet names outside Tiny."""
    from oodfilter_neglabel import NegLabel

    tiny = {data.imagenet_names[i] for i in data.imagenet_index}
    vocabulary = [n for n in data.imagenet_names if n not in tiny]
    scorer = make_scorer(model, names, NegLabel(vocabulary, groups=10), cache, "photo")
    report = method_report(score_sets(scorer, features), sets.id_labels)
    return _row(f"NegLabel (not CLIPN), vocabulary = the {len(vocabulary)} ImageNet names outside Tiny", report, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="world_investigation")
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "world"))
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny data, 2-step recipes)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cache, out = Path(args.cache_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    data = load_world_data(**QUICK_DATA) if quick else load_world_data()
    bank = load_feature_bank(data, cache, templates=WORLD_TEMPLATES[:2] if quick else WORLD_TEMPLATES)
    world = build_world("A", args.seed, data, bank, cache, HeadRecipe(epochs=2 if quick else 60))
    names = [data.names[c] for c in data.id_classes]
    sets = eval_sets(data)
    base = oodfilter.load_model(world.model_name, device="cpu")
    features = sets.features(base, bank)
    tree = link_tree(out / "generic-tree", data.generic, data.imagenet_names)
    header = ("| variant | near AUROC | near FPR95 | DTD AUROC | DTD FPR95 | ID kept / near caught / DTD caught "
              "| held-out separation |\n|---|---|---|---|---|---|---|")
    lines = [header, _row("MCM (reference)", score_world(base, names, ["mcm"], features, sets, cache, quick)["mcm"],
                          None)]
    results: dict[str, dict] = {}
    for name, steps, batch_size, lr in RECIPES:
        steps, batch_size = (2, 8) if quick else (steps, batch_size)
        recipe = argparse.Namespace(steps=steps, batch_size=batch_size, lr=lr)
        bundle, figures = train_no_branch(world, tree, cache / f"no-branch-generic-{world.folder.name}-{steps}-"
                                          f"{recipe.batch_size}-{lr}", recipe, args.seed)
        model = oodfilter.load_model(bundle, device="cpu")
        reports = score_world(model, names, ["ctw", "atd"], features, sets, cache, quick)
        results[name] = {"training": figures, "reports": reports}
        for method in ("ctw", "atd"):
            lines.append(_row(f"{method.upper()}, {name}", reports[method], figures["val_ctw_auroc"]))
        if name.startswith("default"):
            photo = score_world(model, names, ["atd"], features, sets, cache, quick, templates="photo")
            lines.append(_row("ATD, default, evaluated with the single photo template", photo["atd"], None))
            with torch.no_grad():
                model.clip.logit_scale.fill_(math.log(100.0))
            hundred = score_world(model, names, ["ctw", "atd"], features, sets, cache, quick)
            for method in ("ctw", "atd"):
                lines.append(_row(f"{method.upper()}, default, logit scale 100 at scoring", hundred[method], None))
        print(lines[-1], flush=True)
    lines.append(_neglabel_row(base, data, names, features, sets, cache, quick))
    text = "\n".join(lines)
    print(f"\nWorld A seed {args.seed}, generic no-branch, {TEMPLATES} templates; %:\n{text}")
    (out / "investigation.md").write_text(text + "\n")
    (out / "investigation.json").write_text(json.dumps({"args": vars(args), "results": results,
                                                        "finished": time.strftime("%Y-%m-%d %H:%M")}, indent=1))


if __name__ == "__main__":
    main()
