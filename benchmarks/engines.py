"""Engines side by side: images/s of the local scan and of the Ray engine on a local cluster.

Run: python benchmarks/engines.py [--model test-tiny] [--images 400] [--batch-size 32]
Smoke: python benchmarks/engines.py --quick

Same images (../shared/data/imagenet-sample), same model, same machine, one run. The Ray cluster is
started here with every CPU of the machine; its start-up is not timed, its per-job overhead is. --flops
prints the share of the device's measured matrix-multiply peak, in the scan's precision (bf16 where
--precision auto picks it, on a GPU or a CPU with native bf16), that the local scan reaches; the model's
forward FLOPs per image are counted by torch's FLOP counter. On a GPU machine: --model ViT-B-16 --flops.
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
from oodfilter.device import inference_precision
from oodfilter.scan import ScanConfig, scan

# --quick: still both engines on a real Ray cluster (the point of the script), one round each on a few images.
QUICK = {"model": "test-tiny", "images": 16, "batch_size": 8, "rounds": 1, "flops": True, "peak_size": 512}
IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample" / "images"


def forward_flops(model: oodfilter.CLIPN) -> float:
    """FLOPs of one image's forward pass, counted by torch's FLOP counter.

    Attention's fused inference kernel (the nn.MultiheadAttention fast path) is invisible to the counter,
    which then misses its projections (5.89 instead of 8.73 GFLOP for a ViT-B-32), so it is off while
    counting; the scan itself runs with it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.randn(1, 3, model.image_size, model.image_size, device=model.device)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encode_image(image)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """Measured FLOP/s of a large square matrix product on ``device`` (best of ``repeats``)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="test-tiny")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--flops", action="store_true", help="share of the device's measured matmul peak")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul side for the peak (8192 GPU, 4096 CPU)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per engine, interleaved; the best counts")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    if parser.parse_known_args()[0].quick:  # quick changes the defaults; explicit options still win
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    import ray

    if not IMAGES.is_dir():
        raise SystemExit(f"needs the real images at {IMAGES}")
    paths = [str(p) for p in sorted(IMAGES.iterdir())[: args.images]]
    model = oodfilter.load_model(args.model, None if args.model == "test-tiny" else "random")
    classes = ["tench", "goldfish", "hen", "ostrich", "brambling"]
    ray.init(include_dashboard=False, log_to_driver=False)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("local", "ray") * args.rounds:  # interleaved, so drift hits both alike
            config = ScanConfig(inputs=paths, classes=classes, out=f"{tmp}/{engine}-{time.time()}.jsonl",
                                method="mcm", batch_size=args.batch_size, cache_dir=tmp, engine=engine,
                                precision=args.precision, device=model.device.type)
            start = time.perf_counter()
            summary = scan(config, model=model)
            rate = summary.total / (time.perf_counter() - start)
            rates[engine] = max(rates.get(engine, 0.0), rate)
    ray.shutdown()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"model {args.model}, {len(paths)} images, batch {args.batch_size}, device {device}")
    print(f"{'engine':<8} | {'images/s':>9} | {'vs local':>8}")
    print("-" * 32)
    for engine in ("local", "ray"):
        print(f"{engine:<8} | {rates[engine]:>9.1f} | {rates[engine] / rates['local']:>8.2f}")
    if args.flops:
        per_image = forward_flops(model)
        precision = inference_precision(model.device, args.precision)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)  # int8: vs fp32
        size = args.peak_size or (8192 if model.device.type == "cuda" else 4096)
        peak = matmul_peak(model.device, dtype, size)
        print(f"forward {per_image / 1e9:.3g} GFLOP/image; local scan ({precision}) reaches "
              f"{rates['local'] * per_image / peak:.1%} of the measured {peak / 1e12:.3g} TFLOP/s {dtype} "
              f"matmul peak ({size}x{size}) on {device}")


if __name__ == "__main__":
    main()
