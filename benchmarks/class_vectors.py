"""Text-index benchmark: caption encoding old vs new, cold build, warm (cached) load, top-5 queries.

Run: python benchmarks/class_vectors.py [--sizes 1000 50000] [--images 1000] [--repeats 5]
     python benchmarks/class_vectors.py --model ViT-B-16 --templates photo clipn --sizes 1000 --cold-captions 2560
     python benchmarks/class_vectors.py --model ViT-B-16 --encode-sample 256 --sizes 1000 --cold-captions 256
Smoke: python benchmarks/class_vectors.py --quick

The first table compares caption encoding at the full context (the old path: batches in the caller's
order, every caption padded to the tokenizer's 77 positions) with the fast path of ``encode_captions``
(captions sorted by token length, each batch cut to its longest caption), per tower, in captions/s, and
the largest difference between their vectors. Its captions are ``--encode-names`` class names x the
``--encode-templates`` set (1000 x clipn: 128,000 per tower); at the full context that is hours on a
CPU, so ``--encode-sample N`` encodes N of them drawn at random (seed 0), and the "build" columns
extrapolate to the whole set: the full context from the sample's captions/s (every caption costs the
same 77 positions), the cut batches from the sample's token positions/s times the positions of the
whole set's batches as a build plans them (the whole set is tokenized for that, not encoded). Sorted,
the whole set's batches are cut to about their own captions' length; a small sample's batches to the
longest of a wider spread, which is why the two "pos/cap" columns differ.

Names come from ../shared/data/wordnet/synsets.tsv when present (real vocabulary), else are generated.
The default model is the registered tiny model (random weights): the figures measure oodfilter's machinery
(tokenising, encoding, caching, searching), not a particular CLIP. ``--model ViT-B-16`` uses a ViT-B-16
with random weights: its text towers cost what the real ones cost, so the cold build shows what a template
set costs a user on first use. Both towers (yes and no) are encoded, as a CLIPN scan does.

``--cold-captions N`` encodes at most N captions (names x templates) per tower for the cold build; a
larger size's cold time is then extrapolated linearly from the names measured (encoding dominates and is
linear in the number of captions; the table marks it with ~). One caption is encoded before any timing, so
one-off start-up costs are not extrapolated. The cache is then completed for the rest of the names with
random unit vectors, so the warm load is always measured at the full size: it reads vectors the same way
whatever their values.
Everything is measured in this run, on this machine, side by side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_name

import oodfilter
from oodfilter.text import class_vectors as class_vectors_module
from oodfilter.text.encoding import CALIBRATION_CAPTIONS, EncodePlan, encode_captions
from oodfilter.text.templates import resolve_templates

# --quick: two small sizes, the second past --cold-captions, so both the measured and the extrapolated cold
# build run; a small sample of the 1000 x clipn captions for the encoding table.
QUICK = {"sizes": [20, 100], "images": 50, "repeats": 1, "cold_captions": 40, "encode_sample": 48, "encode_names": 100}
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


@contextmanager
def random_encoder(dim: int) -> Iterator[None]:
    """Make the cache fill with random unit vectors instead of encoding (for the untimed completion)."""
    real = class_vectors_module.encode_caption_sets

    def fake(model, jobs: Sequence[tuple[str, Sequence[str]]], *_: object, **__: object) -> list[np.ndarray]:
        out = []
        for _tower, captions in jobs:
            vectors = np.random.default_rng(len(captions)).standard_normal((len(captions), dim)).astype(np.float32)
            out.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        return out

    class_vectors_module.encode_caption_sets = fake
    try:
        yield
    finally:
        class_vectors_module.encode_caption_sets = real


@torch.no_grad()
def full_context(model, tower: str, captions: Sequence[str], batch_size: int) -> np.ndarray:
    """The old path: batches in the caller's order, every caption at the tokenizer's full context."""
    chunks = []
    for start in range(0, len(captions), batch_size):
        tokens = model.tokenize(captions[start : start + batch_size])
        encoded = model.encode_text(tokens) if tower == "yes" else model.encode_text_no(tokens)
        chunks.append(F.normalize(encoded.float(), dim=-1).cpu())
    return torch.cat(chunks).numpy()


def encoding_table(model, args: argparse.Namespace) -> None:
    """Old (full context) vs new (cut batches) captions/s per tower, on a sample of names x templates."""
    names = vocabulary(args.encode_names)
    templates = resolve_templates(args.encode_templates)
    population = len(names) * len(templates)
    rng = np.random.default_rng(0)
    picks = rng.choice(population, size=min(args.encode_sample, population), replace=False)
    captions = [templates[i // len(names)].format(names[i % len(names)]) for i in picks]  # template-major order
    whole = [template.format(name) for template in templates for name in names]
    context = model.tokenizer.context_length
    print(f"caption encoding: {len(names)} names x '{args.encode_templates}' ({len(templates)} templates) = "
          f"{population} captions per tower; {len(captions)} drawn at random (seed 0); batch {args.batch_size}, "
          f"fp32; context {context} positions")
    header = (f"{'tower':>5} | {'captions':>8} | {'full ctx s':>10} | {'cut s':>8} | {'full cap/s':>10} | "
              f"{'cut cap/s':>9} | {'cut/full':>8} | {'max diff':>8} | {'sample pos/cap':>14} | "
              f"{'whole pos/cap':>13} | {'full build h':>12} | {'cut build h':>11}")
    print(header)
    print("-" * len(header))
    builds = {}
    tokens = None
    for tower in args.encode_towers:
        # The whole set's batches, as a build plans them: their token positions scale the sample's cut time.
        whole_plan = EncodePlan(model, tower, whole, args.batch_size, first_batch=CALIBRATION_CAPTIONS, tokens=tokens)
        tokens = whole_plan.tokens
        sample_plan = EncodePlan(model, tower, captions, args.batch_size, first_batch=CALIBRATION_CAPTIONS)
        start = time.perf_counter()
        old = full_context(model, tower, captions, args.batch_size)
        old_s = time.perf_counter() - start
        start = time.perf_counter()
        new = encode_captions(model, tower, captions, args.batch_size, precision="fp32")
        new_s = time.perf_counter() - start
        diff = float(np.abs(old - new).max())
        old_rate, new_rate = len(captions) / old_s, len(captions) / new_s
        sample_pos, whole_pos = sample_plan.positions / len(captions), whole_plan.positions / population
        builds[tower] = (population / old_rate, population * whole_pos / (new_rate * sample_pos))
        print(f"{tower:>5} | {len(captions):>8} | {old_s:>10.2f} | {new_s:>8.2f} | {old_rate:>10.1f} | "
              f"{new_rate:>9.1f} | {new_rate / old_rate:>8.2f} | {diff:>8.1e} | {sample_pos:>14.2f} | "
              f"{whole_pos:>13.2f} | {builds[tower][0] / 3600:>12.3g} | {builds[tower][1] / 3600:>11.3g}", flush=True)
    old_total = sum(old for old, _ in builds.values())
    new_total = sum(new for _, new in builds.values())
    print(f"whole set, towers {' + '.join(builds)}: full context ~{old_total / 3600:.3g} h, "
          f"cut ~{new_total / 3600:.3g} h: {old_total / new_total:.2f}x (full: the sample's captions/s; cut: the "
          "sample's token positions/s over the whole set's cut batches)")
    print()


def load(name: str) -> oodfilter.CLIPN:
    if name == "test-tiny":
        return oodfilter.load_model("test-tiny", device="cpu")
    return oodfilter.load_model(name, "random", device="cpu")


def measure(model, names: list[str], templates: str, args: argparse.Namespace, queries: torch.Tensor) -> str:
    """One table row: cold build (measured or extrapolated), warm load, FAISS and matmul top-5."""
    def build(subset: list[str], cache: str) -> oodfilter.ClassVectors:
        return oodfilter.build_class_vectors(model, subset, templates=templates, cache_dir=cache, include_no=True,
                                             batch_size=args.batch_size)

    per_name = len(resolve_templates(templates))
    cold_names = names[: max(1, args.cold_captions // per_name)] if args.cold_captions else names
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        build(cold_names, cache)
        cold_measured = time.perf_counter() - start
        if len(cold_names) < len(names):
            with random_encoder(model.embed_dim):
                build(names, cache)
        index = build(names, cache)
        warm = best_of(args.repeats, lambda: build(names, cache))
    cold = cold_measured * len(names) / len(cold_names)
    mark = " " if len(cold_names) == len(names) else "~"
    index.search_index()  # built once per index; not part of the per-query cost
    faiss_s = best_of(args.repeats, lambda: index.nearest_classes(queries, k=5))
    matmul_s = best_of(args.repeats, lambda: (queries @ index.yes.T).topk(5, dim=1))
    _, faiss_idx = index.nearest_classes(queries, k=5)
    matmul_idx = (queries @ index.yes.T).topk(5, dim=1).indices.numpy()
    agree = float((faiss_idx[:, 0] == matmul_idx[:, 0]).mean())
    per_k = 1000 / args.images * 1000
    captions = len(names) * per_name
    return (f"{len(names):>7} | {templates:>9} | {captions:>8} | {len(cold_names):>9} | {cold_measured:>10.2f} | "
            f"{mark}{cold:>11.1f} | {warm:>11.3f} | {cold / warm:>9.0f} | {faiss_s * per_k:>13.2f} | "
            f"{matmul_s * per_k:>14.2f} | {matmul_s / faiss_s:>12.2f} | {agree:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 50_000])
    parser.add_argument("--images", type=int, default=1000, help="query images per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="test-tiny",
                        help="test-tiny (default) or an open_clip name (random weights)")
    parser.add_argument("--templates", nargs="+", default=["photo"],
                        help="template sets to compare (photo, clipn, ...)")
    parser.add_argument("--cold-captions", type=int, default=0,
                        help="encode at most N captions per tower cold; extrapolate the rest")
    parser.add_argument("--encode-names", type=int, default=1000, help="class names of the encoding table")
    parser.add_argument("--encode-templates", default="clipn", help="template set of the encoding table")
    parser.add_argument("--encode-sample", type=int, default=2048,
                        help="captions drawn from names x templates for the encoding table (0: skip it)")
    parser.add_argument("--encode-towers", nargs="+", default=["yes", "no"], choices=["yes", "no"])
    parser.add_argument("--batch-size", type=int, default=256, help="captions per encoder call")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    if parser.parse_known_args()[0].quick:  # quick changes the defaults; explicit options still win
        parser.set_defaults(**QUICK)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load(args.model)
    queries = F.normalize(torch.randn(args.images, model.embed_dim), dim=-1)
    class_vectors_module.encode_captions(model, "yes", ["a photo of a warm-up."])  # one-off start-up costs
    print(f"model {args.model} (D={model.embed_dim}, yes + no towers), {torch.get_num_threads()} CPU threads "
          f"({cpu_name()}), {args.images} query images, best of {args.repeats}")
    if args.encode_sample:
        encoding_table(model, args)
    header = (f"{'names':>7} | {'templates':>9} | {'captions':>8} | {'cold names':>9} | {'cold meas s':>10} | "
              f"{'cold s (all)':>12} | {'warm load s':>11} | {'cold/warm':>9} | {'top5 FAISS ms':>13} | "
              f"{'top5 matmul ms':>14} | {'matmul/FAISS':>12} | agree")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        names = vocabulary(size)
        for templates in args.templates:
            print(measure(model, names, templates, args, queries), flush=True)
    print("captions = names x templates, per tower. Cold build encodes every caption with both towers (~: "
          "extrapolated from the 'cold names' measured); warm load reads the on-disk FAISS cache. "
          "Query times are per 1k images.")


if __name__ == "__main__":
    main()
