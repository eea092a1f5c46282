"""Memory and time at scale: reading a manifest back (resume, summary, report), streamed vs held whole.

Run: python benchmarks/scale.py [--rows 100000 1000000]
Smoke: python benchmarks/scale.py --quick

A synthetic JSONL manifest of N rows (paths of files that need not exist, random scores and top classes
from 1000 names, 1% error rows) is written once per size. Each stage then runs in a fresh Python process,
so its peak RSS is its own:
  resume:  the paths already done, as ``scan --resume`` reads them (oodfilter.sinks.readback.done_paths);
  summary: the scan's closing tally of its files' rows: counts, per-class rates and the paths an action
           would move (oodfilter.sinks.readback.tally_manifest), given the scan's list of N paths;
  report:  ``oodfilter report`` (oodfilter.report.write_report; the gallery files do not exist, so their
           cards are placeholders).
Each against the baseline it replaced, on the same file: every row read into a list first
(read_manifest), then the same work (what scan, resume and report did before they streamed).
"floor" is a process that only imports the stage's modules: the interpreter and its libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import run_stage_process

QUICK = {"rows": [2000, 20000]}
STAGES = ("floor", "resume", "summary", "report")


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds, every code path")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # the child process's job
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def synthetic_path(index: int) -> str:
    """The path of row ``index`` (a plausible dataset layout; no file is created)."""
    return f"/data/datasets/crawl-2026/shard-{index // 10000:05d}/{index:09d}.jpg"


def write_manifest(path: Path, rows: int) -> None:
    """Write a JSONL manifest of ``rows`` rows in the manifest's own row format."""
    from oodfilter.sinks.rows import ManifestRow

    rng = random.Random(0)
    names = [f"class {i:04d}" for i in range(1000)]
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(rows):
            if rng.random() < 0.01:
                row = ManifestRow(synthetic_path(index), "error", error="cannot identify image file")
            else:
                score = rng.random()
                row = ManifestRow(synthetic_path(index), "ok", ood_score=score, is_ood=score > 0.8,
                                  top_class=rng.choice(names), top_prob=rng.random())
            handle.write(json.dumps(row.to_dict()) + "\n")
    Path(f"{path}.meta.json").write_text(json.dumps({"method": "mcm", "threshold": 0.8, "model": "synthetic"}))


def run_stage(stage: str, manifest: Path, baseline: bool) -> dict[str, float]:
    """Run one stage in this process; return its seconds and this process's peak RSS (MB)."""
    if stage == "report":
        from oodfilter.report import write_report
        from oodfilter.report.html import ReportConfig
        from oodfilter.report.summary import summarise
        from oodfilter.sinks.manifest import read_manifest, read_meta
    else:
        from oodfilter.sinks.manifest import read_manifest
        from oodfilter.sinks.readback import done_paths, tally_manifest
    rows = 0
    with open(manifest, "rb") as handle:
        rows = sum(1 for _ in handle)
    started = time.perf_counter()
    if stage == "resume":
        done = {row.path for row in read_manifest(manifest)} if baseline else done_paths(manifest)
        assert len(done) == rows
    elif stage == "summary":
        wanted = [synthetic_path(i) for i in range(rows)]  # the scan's own list of its files
        if baseline:
            by_path = {row.path: row for row in read_manifest(manifest)}
            chosen = {by_path[p].path for p in wanted if p in by_path and by_path[p].ok and by_path[p].is_ood}
            total = sum(p in by_path for p in wanted)
        else:
            tally = tally_manifest(manifest, wanted, select_ood=True)
            chosen, total = tally.selected, tally.total
        assert total == rows and chosen
    elif stage == "report":
        out = Path(f"{manifest}.{'baseline' if baseline else 'stream'}.html")
        if baseline:
            summarise(read_manifest(manifest), read_meta(manifest), per_gallery=24)
        else:
            write_report(manifest, out, ReportConfig(per_gallery=24), overwrite=True)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(stage: str, manifest: Path, baseline: bool) -> dict[str, float]:
    """Run a stage in a fresh process and return what it measured."""
    return run_stage_process(__file__, stage, "--manifest", str(manifest), *(["--baseline"] if baseline else []))


def main() -> None:
    args = parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, Path(args.manifest), args.baseline)))
        return
    results: dict[int, dict[str, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            manifest = Path(tmp) / f"m{rows}.jsonl"
            started = time.perf_counter()
            write_manifest(manifest, rows)
            print(f"{rows} rows: manifest of {manifest.stat().st_size / 1e6:.0f} MB written in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            results[rows] = {stage: {"stream": measure(stage, manifest, False),
                                     "baseline": measure(stage, manifest, True)} for stage in STAGES}
    print(f"{'stage':<8} | {'rows':>9} | {'seconds':>8} | {'peak RSS MB':>11} | {'above floor MB':>14} | "
          f"{'baseline s':>10} | {'baseline MB':>11} | {'MB vs baseline':>14}")
    print("-" * 106)
    for stage in STAGES[1:]:
        for rows, by_stage in results.items():
            ours, base = by_stage[stage]["stream"], by_stage[stage]["baseline"]
            floor = by_stage["floor"]["stream"]["rss_mb"]
            print(f"{stage:<8} | {rows:>9} | {ours['seconds']:>8.2f} | {ours['rss_mb']:>11.0f} | "
                  f"{ours['rss_mb'] - floor:>14.0f} | {base['seconds']:>10.2f} | {base['rss_mb']:>11.0f} | "
                  f"{ours['rss_mb'] / base['rss_mb']:>14.2f}")
    small, large = min(results), max(results)
    for stage in STAGES[1:]:
        floor_small = results[small]["floor"]["stream"]["rss_mb"]
        floor_large = results[large]["floor"]["stream"]["rss_mb"]
        growth = (results[large][stage]["stream"]["rss_mb"] - floor_large) / max(
            1.0, results[small][stage]["stream"]["rss_mb"] - floor_small)
        big, little = results[large][stage]["stream"], results[small][stage]["stream"]
        print(f"{stage}: {large // small}x the rows -> {growth:.1f}x the memory above the floor, "
              f"{big['seconds'] / max(1e-9, little['seconds']):.1f}x the time; peak RSS at {large} rows "
              f"{big['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
