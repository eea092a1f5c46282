"""Do decisions move with the precision? Every method in fp32 against bf16 autocast and int8, same images.

Run:   python benchmarks/precision.py [--part both|world|vit] [--out precision_results]   (~15 min, 2 cores)
Smoke: python benchmarks/precision.py --quick

Two models, each encoding the same image files end to end through ``oodfilter.score_files`` (decode,
preprocess, image tower in the precision, class vectors encoded in the precision's text rules), then
scored by every method from those features:

* **world**: the benchmark world A (seed 0) with its generic no-branch (``benchmarks/world``; reuses
  run.py's cache): ID = the 1000 held-out images of the 100 ID classes, near-OOD and DTD. Methods MSP,
  MaxLogit, Energy, MCM, NegLabel, PLP, CTW, ATD. PLP's probe is fitted on the cached fp32 features of the
  ID training images in every column, so only the scored features differ.
* **vit**: open_clip ViT-B-32 with random weights (its speed and its numerics do not depend on trained
  weights), ``--images`` real ImageNet-sample photos, ``--classes`` ImageNet names; MSP, MaxLogit, Energy,
  MCM (no trained no-branch).

Per method and precision: the largest |score difference| from fp32 and the share of images whose
decision differs from fp32's, for three decision rules: the method's own threshold-free rule (CTW, ATD), a
threshold calibrated for 95% ID recall on the fp32 ID scores (world; the same threshold for every
precision, as a stored calibration would be), and the fp32 median score (the hardest case: half the
images sit next to it). AUROC (ID vs near-OOD, ID vs DTD) per precision on the world.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import oodfilter
from oodfilter.decision import minimum_calibration_images
from oodfilter.device import cpu_has_native_bf16
from oodfilter.evaluate.metrics import auroc

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
PRECISIONS = ("fp32", "bf16", "int8")
QUICK = {"images": 16, "classes": 5, "vit_model": "test-tiny"}


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["both", "world", "vit"], default="both")
    parser.add_argument("--images", type=int, default=512, help="ImageNet-sample images for the ViT part")
    parser.add_argument("--classes", type=int, default=100, help="ImageNet names for the ViT part")
    parser.add_argument("--vit-model", default="ViT-B-32")
    parser.add_argument("--out", default=None, help="folder for precision.json and precision.md")
    parser.add_argument("--cache-dir", default=None, help="the world's cache (default: run.py's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: the tiny model and the quick world")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def encode(scorer: oodfilter.Scorer, files: list[str]) -> torch.Tensor:
    """(N, D) image features of ``files`` through the scan's own path (``score_files``, one decode worker)."""
    chunks: list[torch.Tensor] = []
    rows = [row for batch in oodfilter.score_files(scorer, files, workers=1, feature_sink=chunks.append)
            for row in batch]
    if not all(row.ok for row in rows):
        raise SystemExit(f"unreadable: {[row.path for row in rows if not row.ok][:3]}")
    return torch.cat(chunks)


def compare(scores: dict[str, torch.Tensor], decisions: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict]:
    """Per reduced precision: max |Δscore| and the share of decisions that differ from fp32, per rule."""
    out: dict[str, dict] = {"fp32": {}}
    for precision in scores:
        if precision == "fp32":
            continue
        row: dict[str, float] = {"max_abs_diff": float((scores[precision] - scores["fp32"]).abs().max())}
        for rule, by_precision in decisions.items():
            row[f"flips_{rule}"] = float((by_precision[precision] != by_precision["fp32"]).float().mean())
        out[precision] = row
    return out


def threshold_rules(scores: dict[str, torch.Tensor], id_count: int | None) -> dict[str, dict[str, torch.Tensor]]:
    """Decisions at the fp32 median score and, given the ID images (the first ``id_count``), at the
    threshold calibrated for 95% ID recall on their fp32 scores."""
    reference = scores["fp32"]
    rules = {"median": reference.median()}
    if id_count and id_count >= minimum_calibration_images(0.95):  # the quick run has too few
        rules["calibrated_95"] = torch.tensor(oodfilter.Calibration.fit(reference[:id_count], 0.95, method="",
                                                                        identity={}).threshold)
    return {rule: {p: s.double() > float(t) for p, s in scores.items()} for rule, t in rules.items()}


def vit_part(args: argparse.Namespace, precisions: tuple[str, ...]) -> dict:
    """The random-weight ViT-B-32 part (the tiny model in --quick)."""
    files = [str(p) for p in sorted((IMAGES / "images").iterdir())[: args.images]]
    classes = [line.split("\t")[3] for line in (IMAGES / "labels.tsv").read_text().splitlines()[1: args.classes + 1]]
    model = oodfilter.load_model(args.vit_model, None if args.vit_model == "test-tiny" else "random", device="cpu")
    results: dict = {"model": args.vit_model, "images": len(files), "classes": len(classes), "methods": {}}
    with tempfile.TemporaryDirectory() as cache:
        features, seconds = {}, {}
        for precision in precisions:
            vectors = oodfilter.build_class_vectors(model, classes, templates="photo", cache_dir=cache,
                                                    precision=precision)
            scorer = oodfilter.Scorer(model, vectors, "mcm", precision=precision, batch_size=32)
            started = time.perf_counter()
            features[precision] = encode(scorer, files)
            seconds[precision] = time.perf_counter() - started
        results["min_cosine"] = {p: float((features[p] * features["fp32"]).sum(-1).min()) for p in precisions}
        results["images_per_second"] = {p: len(files) / seconds[p] for p in precisions}
        for method in ("msp", "maxlogit", "energy", "mcm"):
            scores = {}
            for precision in precisions:
                vectors = oodfilter.build_class_vectors(model, classes, templates="photo", cache_dir=cache,
                                                        precision=precision)
                scorer = oodfilter.Scorer(model, vectors, method, precision=precision)
                scores[precision] = scorer.score_features(features[precision]).ood_score
            results["methods"][method] = compare(scores, threshold_rules(scores, None))
    return results


def world_part(args: argparse.Namespace, precisions: tuple[str, ...]) -> dict:
    """World A seed 0 with the generic no-branch: every method, ID vs near-OOD and DTD."""
    from benchmarks.world.build import WORLD_TEMPLATES, load_feature_bank
    from benchmarks.world.data import load_world_data
    from benchmarks.world.evaluation import eval_sets, make_scorer
    from benchmarks.world.run import (
        QUICK_DATA,
        TEMPLATES,
        generic_no_branch_model,
        negative_labels,
    )

    cache = Path(args.cache_dir) if args.cache_dir else oodfilter.text.default_cache_dir() / "world"
    quick = args.quick
    data = load_world_data(**QUICK_DATA) if quick else load_world_data()
    bank = load_feature_bank(data, cache, templates=WORLD_TEMPLATES[:2] if quick else WORLD_TEMPLATES)
    with tempfile.TemporaryDirectory() as tmp:
        model = generic_no_branch_model(data, bank, cache, 0, quick, Path(tmp))
    sets = eval_sets(data)
    reference = sets.features(model, bank)["id-train"]  # PLP's probe: fp32 in every column
    names = [data.names[c] for c in data.id_classes]
    files = {name: [str(f) for f in sets.files[name]] for name in ("id", "near", "dtd")}
    everything = files["id"] + files["near"] + files["dtd"]
    counts = {name: len(f) for name, f in files.items()}
    features, seconds = {}, {}
    for precision in precisions:
        scorer = make_scorer(model, names, "mcm", cache, TEMPLATES, precision=precision)
        started = time.perf_counter()
        features[precision] = encode(scorer, everything)
        seconds[precision] = time.perf_counter() - started
        print(f"  world features in {precision}: {seconds[precision]:.0f} s", flush=True)
    results: dict = {"images": counts, "images_per_second": {p: len(everything) / seconds[p] for p in precisions},
                     "min_cosine": {p: float((features[p] * features["fp32"]).sum(-1).min()) for p in precisions},
                     "methods": {}}
    for method in ("msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"):
        chosen = negative_labels(quick) if method == "neglabel" else method
        templates = "photo" if method == "neglabel" else TEMPLATES
        scores, rule = {}, {}
        for precision in precisions:
            scorer = make_scorer(model, names, chosen, cache, templates,  # type: ignore[arg-type]
                                 reference=reference if method == "plp" else None, precision=precision)
            result = scorer.score_features(features[precision])
            scores[precision] = result.ood_score
            if result.is_ood is not None:
                rule[precision] = result.is_ood
        decisions = threshold_rules(scores, counts["id"])
        if rule:
            decisions = {"own_rule": rule, **decisions}
        row = compare(scores, decisions)
        id_end, near_end = counts["id"], counts["id"] + counts["near"]
        for precision, s in scores.items():
            row.setdefault(precision, {})
            row[precision]["auroc_near"] = auroc(s[:id_end].numpy(), s[id_end:near_end].numpy())
            row[precision]["auroc_dtd"] = auroc(s[:id_end].numpy(), s[near_end:].numpy())
        results["methods"][method] = row
        print(f"  {method} done", flush=True)
    return results


def table(name: str, part: dict) -> str:
    """A markdown table of one part."""
    rules = [("own_rule", "own rule"), ("calibrated_95", "calibrated 95%"), ("median", "at fp32 median")]
    present = [(key, label) for key, label in rules
               if any(f"flips_{key}" in row for rows in part["methods"].values() for row in rows.values())]
    with_auroc = "auroc_near" in next(iter(part["methods"].values()))["fp32"]
    lines = [f"**{name}**: min feature cosine to fp32 "
             + ", ".join(f"{p} {c:.5f}" for p, c in part["min_cosine"].items() if p != "fp32")
             + "; end-to-end images/s " + ", ".join(f"{p} {v:.1f}" for p, v in part["images_per_second"].items()),
             "", "| method | precision | max abs score diff | "
             + " | ".join(f"decisions differing, {label}" for _, label in present)
             + (" | AUROC near / DTD |" if with_auroc else " |"),
             "|---|---|---|" + "---|" * len(present) + ("---|" if with_auroc else "")]
    for method, rows in part["methods"].items():
        for precision, row in rows.items():
            if precision == "fp32":
                diff, flips = "—", ["—"] * len(present)
            else:
                diff = f"{row['max_abs_diff']:.2e}"
                flips = [f"{100 * row[f'flips_{key}']:.2f}%" if f"flips_{key}" in row else "n/a" for key, _ in present]
            cells = [method, precision, diff, *flips]
            if "auroc_near" in row:
                cells.append(f"{100 * row['auroc_near']:.2f} / {100 * row['auroc_dtd']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"needs the real images at {IMAGES}")
    flags = "native bf16 (avx512_bf16/AMX)" if cpu_has_native_bf16() else "no native bf16"
    print(f"CPU: {flags}; {torch.get_num_threads()} torch threads; torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    results: dict = {"cpu_native_bf16": cpu_has_native_bf16(), "torch": torch.__version__}
    texts = []
    if args.part in ("both", "world"):
        results["world"] = world_part(args, PRECISIONS)
        texts.append(table("World A, seed 0, generic no-branch", results["world"]))
    if args.part in ("both", "vit"):
        results["vit"] = vit_part(args, PRECISIONS)
        texts.append(table(f"{results['vit']['model']}, random weights, {results['vit']['images']} images, "
                           f"{results['vit']['classes']} classes", results["vit"]))
    results["seconds"] = time.perf_counter() - started
    text = "\n\n".join(texts)
    print(text)
    worst = max((row.get(key, 0.0) for part in ("world", "vit") if part in results
                 for method in results[part]["methods"].values() for p, row in method.items() if p == "bf16"
                 for key in row if key.startswith("flips_") and key != "flips_median"), default=0.0)
    print(f"bf16: at most {100 * worst:.2f}% of decisions differ from fp32 (own rules and calibrated thresholds); "
          f"{results['seconds']:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "precision.json").write_text(json.dumps(results, indent=1))
        (out / "precision.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
