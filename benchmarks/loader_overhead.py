"""Loader overhead: a plain DataLoader vs the online OOD filter vs the manifest filter, same data.

Run: python benchmarks/loader_overhead.py [--images 600] [--workers 1] [--batch-size 32]
Smoke: python benchmarks/loader_overhead.py --quick

All three iterate the same ImageFolder (DTD textures, real JPEGs) with the same user transform and
worker count, measured side by side in one run:
  plain     the user's DataLoader as it is;
  online    FilteredLoader + OODFilter (tiny model, tag mode): a second CLIP view per image in the
            workers and a forward pass per batch in the main process;
  manifest  ManifestFilter.subset over a manifest written beforehand (its construction is timed too).
Throughput is samples delivered per second; the manifest filter delivers only the kept samples.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

import oodfilter
from oodfilter.pipeline import FilteredLoader, ManifestFilter, OODFilter
from oodfilter.scan import ScanConfig, scan

QUICK = {"images": 32, "batch_size": 8, "repeats": 1}
TEXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "textures-dtd" / "images"


def rate(iterable, count_fn) -> float:
    start = time.perf_counter()
    seen = sum(count_fn(batch) for batch in iterable)
    return seen / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    if parser.parse_known_args()[0].quick:  # quick changes the defaults; explicit options still win
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not TEXTURES.is_dir():
        raise SystemExit(f"needs the real images at {TEXTURES}")

    user_tf = transforms.Compose([transforms.Resize((128, 128)), transforms.ToTensor()])
    full = ImageFolder(str(TEXTURES), transform=user_tf)
    step = max(1, len(full) // args.images)
    indices = list(range(0, len(full), step))[: args.images]
    paths = [full.samples[i][0] for i in indices]
    classes = [f"{c} texture" for c in full.classes]
    model = oodfilter.load_model("test-tiny")

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "scan.jsonl"
        scan(ScanConfig(inputs=paths, classes=classes, out=str(manifest), method="msp", threshold=0.28,
                        cache_dir=tmp, workers=args.workers), model=model)
        ood_filter = OODFilter(model, classes, method="msp", mode="tag", cache_dir=tmp)
        dual = ImageFolder(str(TEXTURES), transform=ood_filter.wrap_transform(user_tf))

        def loader(dataset):
            return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)

        def plain_run():
            return rate(loader(Subset(full, indices)), lambda b: b[0].shape[0])

        def online_run():
            return rate(FilteredLoader(loader(Subset(dual, indices)), ood_filter), lambda b: b[0][0].shape[0])

        def manifest_run():
            start = time.perf_counter()
            kept = ManifestFilter(manifest).subset(Subset(full, indices), paths)
            n = sum(b[0].shape[0] for b in loader(kept))
            return n / (time.perf_counter() - start)

        results = {"plain": [], "online": [], "manifest": []}
        for _ in range(args.repeats):  # interleaved, so drift hits all three alike
            results["plain"].append(plain_run())
            results["online"].append(online_run())
            results["manifest"].append(manifest_run())

    best = {name: max(values) for name, values in results.items()}
    print(f"{len(indices)} DTD images, batch {args.batch_size}, {args.workers} worker(s), "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats}")
    print(f"{'loader':<10} | {'samples/s':>9} | {'vs plain':>8} | {'overhead':>8}")
    print("-" * 46)
    for name in ("plain", "online", "manifest"):
        ratio = best[name] / best["plain"]
        print(f"{name:<10} | {best[name]:>9.1f} | {ratio:>8.3f} | {1 - ratio:>8.1%}")


if __name__ == "__main__":
    main()
