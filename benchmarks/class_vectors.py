"""Text-index benchmark: cold build, warm (cached) load, and top-5 queries, FAISS vs a matrix product.

Run: python benchmarks/class_vectors.py [--sizes 1000 50000] [--images 1000] [--repeats 5]

Names come from ../shared/data/wordnet/synsets.tsv when present (real vocabulary), else are generated.
The model is the registered tiny model (random weights): the figures measure oodfilter's machinery
(tokenising, encoding, caching, searching), not a particular CLIP. Everything is measured in this run,
on this machine, side by side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F

import oodfilter

WORDNET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wordnet" / "synsets.tsv"


def vocabulary(size: int) -> list[str]:
    names: list[str] = []
    if WORDNET.is_file():
        for line in WORDNET.read_text().splitlines():
            for name in line.split("\t")[1].split(","):
                names.append(name.strip())
        names = list(dict.fromkeys(n for n in names if n))
    if len(names) < size:
        names += [f"synthetic class {i}" for i in range(size - len(names))]
    return names[:size]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 50_000])
    parser.add_argument("--images", type=int, default=1000, help="query images per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = oodfilter.load_model("test-tiny", device="cpu")
    queries = F.normalize(torch.randn(args.images, model.embed_dim), dim=-1)
    print(f"model test-tiny (D={model.embed_dim}), {torch.get_num_threads()} CPU threads, "
          f"{args.images} query images, best of {args.repeats}")
    header = (f"{'names':>7} | {'cold build s':>12} | {'warm load s':>11} | {'cold/warm':>9} | "
              f"{'top5 FAISS ms':>13} | {'top5 matmul ms':>14} | {'matmul/FAISS':>12} | agree")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        names = vocabulary(size)
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            index = oodfilter.build_class_vectors(model, names, cache_dir=cache)  # yes + no towers
            cold = time.perf_counter() - start
            warm = best_of(args.repeats, lambda n=names, c=cache: oodfilter.build_class_vectors(model, n, cache_dir=c))
        index.search_index()  # built once per index; not part of the per-query cost
        faiss_s = best_of(args.repeats, lambda i=index: i.nearest_classes(queries, k=5))
        matmul_s = best_of(args.repeats, lambda i=index: (queries @ i.yes.T).topk(5, dim=1))
        _, faiss_idx = index.nearest_classes(queries, k=5)
        matmul_idx = (queries @ index.yes.T).topk(5, dim=1).indices.numpy()
        agree = float((faiss_idx[:, 0] == matmul_idx[:, 0]).mean())
        per_k = 1000 / args.images * 1000
        print(f"{size:>7} | {cold:>12.2f} | {warm:>11.3f} | {cold / warm:>9.0f} | {faiss_s * per_k:>13.2f} | "
              f"{matmul_s * per_k:>14.2f} | {matmul_s / faiss_s:>12.2f} | {agree:.3f}")
    print("cold build encodes every caption with both towers; warm load reads the on-disk FAISS cache. "
          "Query times are per 1k images.")


if __name__ == "__main__":
    main()
