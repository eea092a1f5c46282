"""Scan throughput: oodfilter scan end to end vs the model's own forward rate vs a naive loop, per precision.

Run: python benchmarks/scan_throughput.py [--model ViT-B-32] [--images 256] [--batch-size 32]
Smoke: python benchmarks/scan_throughput.py --quick

Measured side by side in one run, on the same files and the same model (random weights: the speed of a
ViT-B-32 does not depend on its weights), in each precision (fp32, bf16 autocast, int8 dynamic quantisation):
  (a) model forward only: preprocessed tensors already in memory, batched forward passes (best of two);
  (b) `oodfilter scan` end to end (library call, default workers): file discovery, decoding in worker
      processes, preprocessing, forward, scoring, manifest writing;
and once, in fp32:
  (c) naive loop: open, preprocess and forward one image at a time in the main process.
Images: ../shared/data/imagenet-sample (real JPEGs, short side 256 px). The CPU's bf16 support is printed:
bf16 is fast only where the CPU executes it natively (avx512_bf16 / AMX), which is when --precision auto
picks it.
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
from oodfilter.device import cpu_has_native_bf16, inference_precision
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


def forward_rate(scorer: oodfilter.Scorer, tensors: torch.Tensor, batch_size: int) -> float:
    """Images/s of encoding and scoring pre-decoded tensors (best of two, after a warm-up)."""
    scorer.score_images(tensors[:batch_size])
    best = 0.0
    for _ in range(2):  # best of two, so that (b)/(a) is not flattered by a slow (a)
        start = time.perf_counter()
        scorer.score_images(tensors)
        best = max(best, len(tensors) / (time.perf_counter() - start))
    return best


def main() -> None:
    args = parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"needs the real images at {IMAGES}")

    paths = sorted((IMAGES / "images").iterdir())[: args.images]
    classes = [line.split("\t")[3] for line in (IMAGES / "labels.tsv").read_text().splitlines()[1 : args.classes + 1]]
    model = oodfilter.load_model(args.model, None if args.model == "test-tiny" else "random", device="auto")
    device = model.device
    precisions = ["fp32", "bf16"] + (["int8"] if device.type == "cpu" else [])
    bf16 = "native bf16 (avx512_bf16/AMX)" if cpu_has_native_bf16() else "no native bf16 (emulated: slow)"
    print(f"model {args.model} (random weights) on {device}, {torch.get_num_threads()} torch threads, "
          f"{len(paths)} images, batch {args.batch_size}; CPU: {bf16}; --precision auto = "
          f"{inference_precision(device, 'auto')}")
    forward: dict[str, float] = {}
    end_to_end: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tensors = torch.stack([model.preprocess(oodfilter.load_rgb_image(p)) for p in paths])
        workers = None
        for precision in precisions:
            index = oodfilter.build_class_vectors(model, classes, cache_dir=tmp, precision=precision)  # warm cache
            scorer = oodfilter.Scorer(model, index, "mcm", batch_size=args.batch_size, precision=precision)
            # (a) forward on pre-decoded tensors
            forward[precision] = forward_rate(scorer, tensors, args.batch_size)
            # (b) oodfilter scan end to end
            config = ScanConfig(inputs=[str(p) for p in paths], classes=classes, out=f"{tmp}/{precision}.jsonl",
                                method="mcm", batch_size=args.batch_size, cache_dir=tmp, device=str(device.type),
                                precision=precision)
            if args.workers is not None:
                config.workers = args.workers
            workers = config.workers
            start = time.perf_counter()
            summary = scan(config, model=model)
            end_to_end[precision] = len(paths) / (time.perf_counter() - start)
            assert summary.ok == len(paths), summary

        # (c) naive loop, one image at a time, fp32
        index = oodfilter.build_class_vectors(model, classes, cache_dir=tmp, precision="fp32")
        scorer = oodfilter.Scorer(model, index, "mcm", precision="fp32")
        start = time.perf_counter()
        with torch.no_grad():
            for path in paths:
                image = model.preprocess(oodfilter.load_rgb_image(path)).unsqueeze(0).to(device)
                features = model.encode_image(image)
                scorer.score_features(features)
        naive = len(paths) / (time.perf_counter() - start)

    print(f"{'path':<44} | {'images/s':>9} | {'vs forward':>10} | {'vs fp32':>7}")
    print("-" * 80)
    for precision in precisions:
        rate, scan_rate = forward[precision], end_to_end[precision]
        print(f"{f'(a) model forward, pre-decoded, {precision}':<44} | {rate:>9.1f} | {1.0:>10.2f} | "
              f"{rate / forward['fp32']:>7.2f}")
        print(f"{f'(b) oodfilter scan, end to end, {precision}':<44} | {scan_rate:>9.1f} | "
              f"{scan_rate / rate:>10.2f} | {scan_rate / end_to_end['fp32']:>7.2f}")
    print(f"{'(c) naive loop, one image at a time, fp32':<44} | {naive:>9.1f} | {naive / forward['fp32']:>10.2f} | "
          f"{1.0:>7.2f}")
    print(f"scan / naive = {end_to_end['fp32'] / naive:.2f}x (fp32); scan bf16 / scan fp32 = "
          f"{end_to_end['bf16'] / end_to_end['fp32']:.2f}x; scan workers = {workers}")


if __name__ == "__main__":
    main()
