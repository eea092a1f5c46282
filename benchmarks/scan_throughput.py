"""Scan throughput: oodfilter scan end to end vs the model's own forward rate vs a naive loop.

Run: python benchmarks/scan_throughput.py [--model ViT-B-32] [--images 256] [--batch-size 32]
Smoke: python benchmarks/scan_throughput.py --quick

Measured side by side in one run, on the same files and the same model (random weights: the speed of a
ViT-B-32 does not depend on its weights):
  (a) model forward only: preprocessed tensors already in memory, batched forward passes;
  (b) `oodfilter scan` end to end (library call, default workers): file discovery, decoding in worker
      processes, preprocessing, forward, scoring, manifest writing;
  (c) naive loop: open, preprocess and forward one image at a time in the main process.
Images: ../shared/data/imagenet-sample (real JPEGs, short side 256 px).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import oodfilter
from oodfilter.scan import ScanConfig, scan

# --quick: the tiny model, few images and few classes (each class costs 128 captions per text tower).
QUICK = {"model": "test-tiny", "images": 16, "batch_size": 8, "classes": 5}
IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=100, help="class names (the first N ImageNet labels)")
    parser.add_argument("--workers", type=int, default=None, help="decoding workers for (b); default: scan's")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    if parser.parse_known_args()[0].quick:  # quick changes the defaults; explicit options still win
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"needs the real images at {IMAGES}")

    paths = sorted((IMAGES / "images").iterdir())[: args.images]
    classes = [line.split("\t")[3] for line in (IMAGES / "labels.tsv").read_text().splitlines()[1 : args.classes + 1]]
    model = oodfilter.load_model(args.model, None if args.model == "test-tiny" else "random", device="auto")
    device = model.device
    with tempfile.TemporaryDirectory() as tmp:
        index = oodfilter.build_class_vectors(model, classes, cache_dir=tmp)  # warm the text cache
        scorer = oodfilter.Scorer(model, index, "mcm", batch_size=args.batch_size)
        print(f"model {args.model} (random weights) on {device}, {torch.get_num_threads()} torch threads, "
              f"{len(paths)} images, batch {args.batch_size}")

        # (a) forward on pre-decoded tensors
        tensors = torch.stack([model.preprocess(oodfilter.load_rgb_image(p)) for p in paths])
        scorer.score_images(tensors[: args.batch_size])  # warm-up
        forward = 0.0
        for _ in range(2):  # best of two, so that (b)/(a) is not flattered by a slow (a)
            start = time.perf_counter()
            scorer.score_images(tensors)
            forward = max(forward, len(paths) / (time.perf_counter() - start))

        # (b) oodfilter scan end to end
        config = ScanConfig(inputs=[str(p) for p in paths], classes=classes, out=f"{tmp}/m.jsonl", method="mcm",
                            batch_size=args.batch_size, cache_dir=tmp, device=str(device.type))
        if args.workers is not None:
            config.workers = args.workers
        start = time.perf_counter()
        summary = scan(config, model=model)
        end_to_end = len(paths) / (time.perf_counter() - start)
        assert summary.ok == len(paths), summary

        # (c) naive loop, one image at a time
        start = time.perf_counter()
        with torch.no_grad():
            for path in paths:
                image = model.preprocess(oodfilter.load_rgb_image(path)).unsqueeze(0).to(device)
                features = model.encode_image(image)
                scorer.score_features(features)
        naive = len(paths) / (time.perf_counter() - start)

    print(f"{'path':<38} | {'images/s':>9} | {'vs forward':>10}")
    print("-" * 64)
    print(f"{'(a) model forward, pre-decoded':<38} | {forward:>9.1f} | {1.0:>10.2f}")
    print(f"{'(b) oodfilter scan, end to end':<38} | {end_to_end:>9.1f} | {end_to_end / forward:>10.2f}")
    print(f"{'(c) naive loop, one image at a time':<38} | {naive:>9.1f} | {naive / forward:>10.2f}")
    print(f"scan / naive = {end_to_end / naive:.2f}x; scan workers = {config.workers}")


if __name__ == "__main__":
    main()
