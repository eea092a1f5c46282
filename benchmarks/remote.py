"""Where the images live: scan throughput from local files vs WebDataset shards vs S3 vs HTTP, same images.

Run: python benchmarks/remote.py [--model ViT-B-32] [--images 128] [--batch-size 32]
Smoke: python benchmarks/remote.py --quick

One run, one machine, one model (random weights outside --quick: speed does not depend on them) and the
same real photos (../shared/data/imagenet-sample), stored four ways:
  (a) local files in a folder (the baseline);
  (b) the same images in uncompressed WebDataset shards (64 samples each, with a caption field), local;
  (c) an S3 bucket on an S3-compatible server started here on 127.0.0.1 (moto; needs the dev extra);
  (d) a static HTTP server on 127.0.0.1 serving the folder, the files named by URL.
Each is a whole `oodfilter scan` library call (listing, fetching, decoding, forward, manifest), timed after a
warm-up scan that built the class vectors; the table gives images/s and the ratio to (a). A local server
measures the protocol and client overhead, not a network: a real object store adds its latency per object,
which --workers N hides by fetching N images at once.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

import oodfilter
from oodfilter.scan import ScanConfig, scan

QUICK = {"model": "test-tiny", "images": 12, "batch_size": 4}
IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample" / "images"
CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich", "brambling", "goose", "koala"]


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="decoding workers for every source")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def write_shards(files: list[Path], folder: Path, per_shard: int = 64) -> str:
    """Write ``files`` as WebDataset shards (``key.jpg`` + ``key.txt``); return their brace pattern."""
    folder.mkdir()
    count = (len(files) + per_shard - 1) // per_shard
    for number in range(count):
        with tarfile.open(folder / f"{number:04d}.tar", "w") as archive:
            for index, file in enumerate(files[number * per_shard:(number + 1) * per_shard]):
                key = f"{number * per_shard + index:06d}"
                for name, data in ((f"{key}.jpg", file.read_bytes()), (f"{key}.txt", file.stem.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return str(folder / f"{{0000..{count - 1:04d}}}.tar")


def timed_scan(inputs: list[str], args: argparse.Namespace, model: oodfilter.CLIPN, work: Path, name: str) -> float:
    """Images/s of one whole scan of ``inputs``."""
    config = ScanConfig(inputs=inputs, classes=CLASSES, out=str(work / f"{name}.jsonl"), workers=args.workers,
                        batch_size=args.batch_size, cache_dir=str(work / "cache"), overwrite=True, method="mcm",
                        threshold=0.5)  # a random-weight tower has no trained no-branch: a peer score
    start = time.perf_counter()
    summary = scan(config, model=model)
    seconds = time.perf_counter() - start
    if summary.ok != args.images:
        raise SystemExit(f"{name}: {summary.ok} of {args.images} images scored ({summary.errors} errors)")
    return args.images / seconds


def main() -> None:
    """Scan the same images from each place and print the side-by-side table."""
    args = parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"the real images are not at {IMAGES} (../shared/data); nothing to measure")
    files = sorted(IMAGES.iterdir())[: args.images]
    if len(files) < args.images:
        raise SystemExit(f"only {len(files)} images in {IMAGES}; pass --images {len(files)} or fewer")
    import torch

    torch.manual_seed(0)
    model = oodfilter.load_model(args.model, None if args.model == "test-tiny" else "random", device="cpu")
    print(f"model {args.model}, {args.images} images, batch {args.batch_size}, workers {args.workers}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        folder = work / "photos"
        folder.mkdir()
        for file in files:
            (folder / file.name).write_bytes(file.read_bytes())
        pattern = write_shards(files, work / "shards")
        timed_scan([str(folder)], args, model, work, "warm-up")  # class vectors built once, cached for all
        rates: dict[str, float | str] = {"local files": timed_scan([str(folder)], args, model, work, "local")}
        rates["WebDataset shards (local)"] = timed_scan([pattern], args, model, work, "shards")
        rates["S3 server on 127.0.0.1 (moto)"] = _with_s3(folder, lambda: timed_scan(
            ["s3://bench/photos/"], args, model, work, "s3"))
        from servers import http_server

        with http_server(folder) as base:
            rates["HTTP server on 127.0.0.1"] = timed_scan([f"{base}/{file.name}" for file in files], args, model,
                                                           work, "http")
    baseline = rates["local files"]
    assert isinstance(baseline, float)
    header = f"{'source':<30} | {'images/s':>9} | {'vs local':>8}"
    print(header)
    print("-" * len(header))
    for source, rate in rates.items():
        if isinstance(rate, str):
            print(f"{source:<30} | {'-':>9} | {'-':>8}")
        else:
            print(f"{source:<30} | {rate:>9.1f} | {rate / baseline:>8.2f}")
    for source, rate in rates.items():
        if isinstance(rate, str):
            print(f"{source}: {rate}")


def _with_s3(folder: Path, run: Callable[[], float]) -> float | str:
    """Run ``run`` against an S3 server holding ``folder`` as s3://bench/photos, or say why it cannot."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        return "skipped: needs moto[server] and s3fs (pip install -e '.[dev]')"
    from servers import s3_server, upload

    with s3_server():
        upload(folder, "s3://bench/photos")
        return run()


if __name__ == "__main__":
    main()
