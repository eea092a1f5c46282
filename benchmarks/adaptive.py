"""Memory and time of the dataset-aware pass (`rescore --adapt`) at scale: streamed from stored features vs held whole.

Run: python benchmarks/adaptive.py [--rows 100000 1000000] [--model ViT-B-32] [--classes 1000]
Smoke: python benchmarks/adaptive.py --quick

Synthetic stored features (N rows of L2-normalised float16, the `scan --save-features` format, 5% of them
drawn around a few "junk" directions so the pass finds negatives) are written once per size. Each stage
runs in a fresh Python process, so its peak memory is its own:
  floor:    the model, its class vectors and the scorer only (what every stage holds anyway);
  stream:   oodfilter.scoring.adaptive.adaptive_scores on the memory-mapped file, as `rescore --adapt`
            calls it: it reads one chunk of rows at a time, twice, and keeps 4 bytes per image;
  baseline: the same pass given the whole (N, D) array read into memory as float32 first (what a pass
            that holds the dataset would need). "max score diff" compares their scores (0 when both processes
            compute alike; random weights give near-tied first-pass scores, so a last-bit difference in a
            matrix product can pick other seed images).
Memory is the process's peak *anonymous* memory (RssAnon, sampled every 5 ms): the pages of a memory-mapped
file also count in RSS while they are cached, but the kernel drops them under pressure, so RSS would charge
the streamed pass for the file it reads. The peak RSS is printed too.
The model has random weights (memory and time do not depend on them); the class list is generated names.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from machine import cpu_name, run_stage_process

QUICK = {"rows": [20000, 200000], "model": "test-tiny", "classes": 20}
STAGES = ("floor", "stream", "baseline")


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds, every code path")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # the child process's job
    parser.add_argument("--features", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def write_features(path: Path, rows: int, dim: int, chunk: int = 65536) -> None:
    """Write ``rows`` unit-norm float16 rows of width ``dim``: 95% spread out, 5% around four junk directions."""
    rng = np.random.default_rng(0)
    junk = rng.standard_normal((4, dim)).astype(np.float32)
    with open(path, "wb") as handle:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            x = rng.standard_normal((n, dim)).astype(np.float32)  # (n, D)
            is_junk = rng.random(n) < 0.05
            x[is_junk] = junk[rng.integers(0, 4, int(is_junk.sum()))] * 3.0 + x[is_junk]
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            handle.write(x.astype("<f2").tobytes())


def class_names(count: int) -> list[str]:
    """Generated class names (the benchmark measures memory and time, not quality)."""
    return [f"object number {i}" for i in range(count)]


def make_scorer(model_name: str, classes: int, cache_dir: str):  # type: ignore[no-untyped-def]
    """The mcm scorer over the class list (class vectors read from ``cache_dir`` after the first build)."""
    import oodfilter

    model = oodfilter.load_model(model_name, None if model_name == "test-tiny" else "random", device="cpu")
    vectors = oodfilter.build_class_vectors(model, class_names(classes), templates="photo", cache_dir=cache_dir)
    return oodfilter.Scorer(model, vectors, "mcm")


class AnonPeak:
    """Sample this process's anonymous resident memory (MB) in a thread and keep the peak."""

    def __init__(self, every: float = 0.005) -> None:
        self.peak, self._every, self._done = self.now(), every, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> float:
        """RssAnon from /proc/self/status, in MB (0 where the kernel does not report it)."""
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while not self._done.wait(self._every):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        """Stop sampling; return the peak seen."""
        self._done.set()
        self._thread.join()
        return max(self.peak, self.now())


def run_stage(stage: str, features: Path, model_name: str, classes: int, cache_dir: str) -> dict[str, float]:
    """Run one stage in this process; return its seconds, peak memory (MB) and the file holding its scores."""
    from oodfilter.scoring.adaptive import adaptive_scores

    scorer = make_scorer(model_name, classes, cache_dir)
    dim = scorer.class_vectors.dim
    stored = np.memmap(features, dtype="<f2", mode="r").reshape(-1, dim)  # (N, D), nothing read yet
    sampler = AnonPeak()
    started = time.perf_counter()
    scores_file, negatives = "", 0
    if stage != "floor":
        given = stored if stage == "stream" else np.asarray(stored, dtype=np.float32)  # baseline: all of it
        result = adaptive_scores(scorer, given)
        scores_file = f"{features}.{stage}.npy"
        np.save(scores_file, result.ood_score)
        negatives = int(result.meta["negatives"])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "scores_file": scores_file, "negatives": negatives, "anon_mb": sampler.stop(),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(stage: str, features: Path, args: argparse.Namespace, cache_dir: str) -> dict[str, float]:
    """Run a stage in a fresh process and return what it measured."""
    return run_stage_process(__file__, stage, "--features", str(features), "--model", args.model,
                             "--classes", str(args.classes), "--cache-dir", cache_dir)


def main() -> None:
    args = parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, Path(args.features), args.model, args.classes, args.cache_dir)))
        return
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores; model {args.model} (random weights), {args.classes} classes, "
          "method mcm, AdaptConfig() defaults", flush=True)
    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dim = make_scorer(args.model, args.classes, tmp).class_vectors.dim  # builds the text cache once
        for rows in args.rows:
            features = Path(tmp) / f"f{rows}.f16"
            write_features(features, rows, dim)
            print(f"{rows} rows x {dim}: {features.stat().st_size / 1e6:.0f} MB of stored features", flush=True)
            results[rows] = {stage: measure(stage, features, args, tmp) for stage in STAGES}
            streamed, held = (np.load(str(results[rows][stage]["scores_file"])) for stage in ("stream", "baseline"))
            results[rows]["stream"]["diff"] = float(np.abs(streamed.astype(np.float64) - held).max())
    print(f"{'rows':>9} | {'negatives':>9} | {'stream s':>8} | {'stream MB above floor':>21} | "
          f"{'baseline s':>10} | {'baseline MB above floor':>23} | {'MB vs baseline':>14} | {'max score diff':>14}")
    print("-" * 129)
    for rows, by_stage in results.items():
        floor = by_stage["floor"]["anon_mb"]
        ours, base = by_stage["stream"], by_stage["baseline"]
        above, base_above = ours["anon_mb"] - floor, base["anon_mb"] - floor
        print(f"{rows:>9} | {int(ours['negatives']):>9} | {ours['seconds']:>8.2f} | {above:>21.0f} | "
              f"{base['seconds']:>10.2f} | {base_above:>23.0f} | {above / max(1.0, base_above):>14.2f} | "
              f"{ours['diff']:>14.1e}")
    small, large = min(results), max(results)
    grow = (results[large]["stream"]["anon_mb"] - results[large]["floor"]["anon_mb"]) / max(
        1.0, results[small]["stream"]["anon_mb"] - results[small]["floor"]["anon_mb"])
    per_row = (results[large]["stream"]["anon_mb"] - results[large]["floor"]["anon_mb"]) * 2**20 / large
    print(f"stream: {large // small}x the rows -> {grow:.1f}x the anonymous memory above the floor "
          f"({per_row:.0f} bytes per row at {large} rows); peak RSS at {large} rows "
          f"{results[large]['stream']['rss_mb']:.0f} MB (floor {results[large]['floor']['rss_mb']:.0f} MB, mapped file "
          "pages included)")


if __name__ == "__main__":
    main()
