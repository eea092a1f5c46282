"""Rescoring from stored features vs a full rescan, on the same images, class list and model.

Run: python benchmarks/rescore.py [--model ViT-B-32] [--images 512] [--classes 1000]
Smoke: python benchmarks/rescore.py --quick

Measured side by side in one run (random weights: speed and float16 error do not depend on them):
  (a) `oodfilter scan` of the images against the class list (decode, image forward, scoring);
  (b) `oodfilter rescore` of a `--save-features` scan of the same images against the same list: no image is
      opened and the image encoder does not run.
The class vectors are built once before either is timed (both read them from the same text cache), so
the ratio is the image side's. Also printed: the max |score difference| (features stored in float16) for
the method and for energy (logits scaled by the temperature: the most sensitive), whether every decision at
the median score and every top class agrees, and the bytes stored per image.
Images: ../shared/data/imagenet-sample; classes: its ImageNet names.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import oodfilter
from oodfilter.scan import ScanConfig, scan
from oodfilter.scan.rescore import RescoreConfig, rescore
from oodfilter.sinks.features import data_path
from oodfilter.sinks.manifest import read_manifest

QUICK = {"model": "test-tiny", "images": 24, "classes": 20}
IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--method", default="mcm")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    if parser.parse_known_args()[0].quick:  # quick changes the defaults; explicit options still win
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"needs the real images at {IMAGES}")
    paths = [str(p) for p in sorted((IMAGES / "images").iterdir())[: args.images]]
    labels = [line.split("\t") for line in (IMAGES / "labels.tsv").read_text().splitlines()[1:]]
    names = [row[3] for row in labels]
    # ImageNet repeats two names: those two classes are told apart by their WordNet id
    classes = [name if names.count(name) == 1 else f"{name} ({row[1]})"
               for row, name in zip(labels, names, strict=True)]
    classes = classes[: args.classes]
    model = oodfilter.load_model(args.model, None if args.model == "test-tiny" else "random", device="auto")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        oodfilter.build_class_vectors(model, classes, templates="photo", cache_dir=tmp)  # warm the text cache
        text_seconds = time.perf_counter() - started
        common = {"classes": classes, "method": args.method, "templates": "photo", "cache_dir": tmp}
        stored = f"{tmp}/stored.jsonl"
        scan(ScanConfig(inputs=paths, out=stored, save_features=True, **common), model=model)  # pays the encoder
        # decide at the median score: half the images sit on each side, the most decisions that could flip. The
        # threshold is halfway between the two middle scores, not one image's own score: an image exactly on the
        # threshold flips with any rounding (float16 storage moves scores by ~1e-6), which says nothing.
        ordered = sorted(row.score for row in read_manifest(stored) if row.ok)
        middle = len(ordered) // 2
        common["threshold"] = (ordered[middle - 1] + ordered[middle]) / 2 if middle else ordered[0]

        started = time.perf_counter()
        scan(ScanConfig(inputs=paths, out=f"{tmp}/rescan.jsonl", **common), model=model)
        rescan_seconds = time.perf_counter() - started
        classes_file = Path(tmp) / "classes.txt"
        classes_file.write_text("\n".join(classes) + "\n")
        started = time.perf_counter()
        rescore(RescoreConfig(manifest=stored, classes=str(classes_file), out=f"{tmp}/rescored.jsonl",
                              method=args.method, templates="photo", threshold=common["threshold"], cache_dir=tmp),
                model=model)
        rescore_seconds = time.perf_counter() - started
        scanned = {row.path: row for row in read_manifest(f"{tmp}/rescan.jsonl")}
        rescored = read_manifest(f"{tmp}/rescored.jsonl")
        ok = [row for row in rescored if row.ok]
        diff = max(abs(row.score - scanned[row.path].score) for row in ok)
        agree = all(row.is_ood == scanned[row.path].is_ood and row.top_class == scanned[row.path].top_class
                    for row in ok)
        extra = []  # a score on logits scaled by the model's temperature is the most sensitive to float16
        for method in ("energy",) if args.method != "energy" else ():
            config = {**common, "method": method, "threshold": None}
            scan(ScanConfig(inputs=paths, out=f"{tmp}/{method}.jsonl", **config), model=model)
            rescore(RescoreConfig(manifest=stored, classes=str(classes_file), out=f"{tmp}/{method}-r.jsonl",
                                  method=method, templates="photo", cache_dir=tmp), model=model)
            direct = {row.path: row.score for row in read_manifest(f"{tmp}/{method}.jsonl") if row.ok}
            extra.append((method, max(abs(row.score - direct[row.path])
                                      for row in read_manifest(f"{tmp}/{method}-r.jsonl") if row.ok)))
        per_image = data_path(stored).stat().st_size / len(ok)

    print(f"model {args.model} (random weights), {len(paths)} images, {len(classes)} classes, method {args.method}; "
          f"class vectors built once beforehand ({text_seconds:.1f} s)")
    print(f"{'path':<42} | {'seconds':>8} | {'images/s':>9} | {'speed-up':>8}")
    print("-" * 76)
    print(f"{'(a) full rescan':<42} | {rescan_seconds:>8.4f} | {len(paths) / rescan_seconds:>9.1f} | {1.0:>8.1f}")
    print(f"{'(b) rescore from stored features':<42} | {rescore_seconds:>8.4f} | "
          f"{len(paths) / rescore_seconds:>9.1f} | {rescan_seconds / rescore_seconds:>8.1f}")
    print(f"max abs score diff = {diff:.2e}; decisions and top classes identical: {agree}; "
          f"stored: {per_image:.0f} bytes per image (float16 x {model.embed_dim})")
    for method, method_diff in extra:
        print(f"{method}: max abs score diff = {method_diff:.2e} (logit scale {model.logit_scale:.1f})")
    print(f"decision threshold: the median {args.method} score, {common['threshold']:.6g}; gap to the nearest "
          f"score {min(abs(x - common['threshold']) for x in ordered):.2e}")


if __name__ == "__main__":
    main()
