"""Fine-tuning throughput: training samples/s and peak memory, against a forward-only baseline.

Run: python benchmarks/finetune_throughput.py [--models test-tiny ViT-B-16] [--steps 6]
Smoke: python benchmarks/finetune_throughput.py --quick

For each model (random weights; speed does not depend on them), in its own process so that peak memory
is its own, measured side by side in one run on generated image-caption pairs written to disk:
  forward   the three encoders (image, yes text, no text) without gradients, batches in memory;
  train     `oodfilter finetune` end to end (data loading, augmentation, forward, CLIPN loss, backward
            through the no-tower, AdamW), the first step excluded as warm-up.
Peak memory is the process's peak resident set on the CPU, or peak allocated GPU memory on CUDA.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# --quick: the tiny model only, and two steps (the first is warm-up, so one is timed).
QUICK = {"models": ["test-tiny"], "steps": 2}
BATCH = {"test-tiny": 64}
DEFAULT_BATCH = 16


def measure(model_name: str, steps: int, device_name: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    import oodfilter
    from oodfilter.device import resolve_device
    from oodfilter.train import FinetuneConfig, finetune

    device = resolve_device(device_name)
    pretrained = None if model_name == "test-tiny" else "random"
    model = oodfilter.load_model(model_name, pretrained, device=device)
    batch = BATCH.get(model_name, DEFAULT_BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        with open(root / "pairs.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "caption"])
            for i in range(batch * (steps + 1)):
                Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
                writer.writerow([f"{i}.jpg", f"a photo of thing number {i % 50}"])
        images = torch.randn(batch, 3, model.image_size, model.image_size, device=device)
        tokens = model.tokenize([f"a photo of thing number {i}" for i in range(batch)])
        with torch.no_grad():
            for _ in range(2):  # the second pass is timed
                start = time.perf_counter()
                model.encode_image(images), model.encode_text(tokens), model.encode_text_no(tokens)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                forward = batch / (time.perf_counter() - start)
        stamps: list[float] = []
        config = FinetuneConfig(model=model_name, data=str(root / "pairs.csv"), out=str(root / "run"), steps=steps,
                                batch_size=batch, val_fraction=0.0, device=device.type, log_every=1000)
        finetune(config, model=model, progress=lambda done, total, text: stamps.append(time.perf_counter()))
        train = batch * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        where = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        where = f"CPU, {torch.get_num_threads()} threads"
    params = sum(p.numel() for p in model.no_tower.parameters())
    return {"model": model_name, "batch": batch, "forward": forward, "train": train, "peak_mib": peak,
            "device": where, "trainable_m": params / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["test-tiny", "ViT-B-16"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    if parser.parse_known_args()[0].quick:  # quick changes the defaults; explicit options still win
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.device)))
        return
    rows = []
    for name in args.models:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--device",
                              args.device], capture_output=True, text=True)
        if out.returncode != 0:  # the child's traceback, not just its exit status
            raise SystemExit(f"measuring {name} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"device: {rows[0]['device']}")
    print(f"{'model':<10} | {'trainable M':>11} | {'batch':>5} | {'forward/s':>9} | {'train/s':>8} | "
          f"{'train/forward':>13} | {'peak MiB':>8}")
    print("-" * 84)
    for r in rows:
        print(f"{r['model']:<10} | {r['trainable_m']:>11.1f} | {r['batch']:>5} | {r['forward']:>9.1f} | "
              f"{r['train']:>8.1f} | {r['train'] / r['forward']:>13.2f} | {r['peak_mib']:>8.0f}")


if __name__ == "__main__":
    main()
