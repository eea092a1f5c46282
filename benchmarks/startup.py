"""CLI start-up: help, listings and errors that need no model, against the time of importing torch.

Run: python benchmarks/startup.py [--repeats 5]
Smoke: python benchmarks/startup.py --quick

Every command runs in a fresh interpreter (``python -m oodfilter.cli ARGS``), ``--repeats`` times; the
table gives the median wall time, its ratio to the median of ``python -c "import torch"`` (what every one
of these commands paid before they stopped importing torch), and whether the command imported torch (one
more run with ``-X importtime``). The error rows are refusals that need no model: a bad option value, a
missing class-list file, a missing input folder, an eval without OOD set. The CPU is named from
/proc/cpuinfo; the times are those of a machine that may be busy with other work.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name

from oodfilter.cli.main import COMMANDS

QUICK = {"repeats": 1}
QUICK_COMMANDS = ("oodfilter --help", "oodfilter --version", "oodfilter scan --help", "oodfilter models",
                  "oodfilter plugins", "scan: missing class file")


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` swaps in the smoke defaults (one run of a few commands)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="fresh-interpreter runs per command (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one run of a few commands")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def commands(folder: Path) -> dict[str, tuple[list[str], int]]:
    """Label → (arguments, expected exit code) of every command timed; errors refer to files in ``folder``."""
    (folder / "images").mkdir()
    (folder / "images" / "a.png").write_bytes(b"")  # found by name; never decoded: the scan stops before
    table: dict[str, tuple[list[str], int]] = {
        "oodfilter --help": (["--help"], 0),
        "oodfilter --version": (["--version"], 0),
    }
    for name in sorted(COMMANDS):
        table[f"oodfilter {name} --help"] = ([name, "--help"], 0)
    table["oodfilter models"] = (["models"], 0)
    table["oodfilter plugins"] = (["plugins"], 0)
    table["scan: bad option value"] = (["scan", "images", "--batch-size", "x"], 2)
    table["scan: missing class file"] = (["scan", "images", "--classes", "missing.txt", "--model", "test-tiny"], 2)
    table["scan: missing input folder"] = (["scan", "nowhere", "--classes", "missing.txt"], 2)
    table["eval: no OOD set"] = (["eval", "--id", "images", "--classes", "missing.txt"], 2)
    return table


def timed(argv: list[str], folder: Path, expected: int | None = None) -> float:
    """Run ``argv`` in ``folder`` and return its wall time; a wrong exit code stops the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if expected is not None and result.returncode != expected:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}, not {expected}:\n{result.stderr[-2000:]}")
    return seconds


def imports_torch(args: list[str], folder: Path) -> bool:
    """Whether ``oodfilter ARGS`` imports torch (read from ``-X importtime``)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "oodfilter.cli", *args], cwd=folder,
                            capture_output=True, text=True, check=False)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in result.stderr.splitlines())


def main() -> None:
    args = parse_args()
    env_note = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table = commands(folder)
        if args.quick:
            table = {label: table[label] for label in QUICK_COMMANDS}
        baseline = statistics.median(timed([sys.executable, "-c", "import torch"], folder, 0)
                                     for _ in range(args.repeats))
        interpreter = statistics.median(timed([sys.executable, "-c", "pass"], folder, 0) for _ in range(args.repeats))
        rows = []
        for label, (argv, code) in table.items():
            seconds = statistics.median(timed([sys.executable, "-m", "oodfilter.cli", *argv], folder, code)
                                        for _ in range(args.repeats))
            rows.append((label, seconds, imports_torch(argv, folder)))
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); Python {platform.python_version()}; {env_note}; "
          f"median of {args.repeats} fresh interpreter(s) per command")
    print(f'baseline: python -c "import torch" {baseline:.3f} s; python -c "pass" {interpreter:.3f} s')
    width = max(len(label) for label, _, _ in rows)
    print(f"{'command':<{width}} | {'seconds':>7} | {'vs import torch':>15} | {'imports torch':>13}")
    print("-" * (width + 46))
    for label, seconds, torch_imported in rows:
        print(f"{label:<{width}} | {seconds:>7.3f} | {seconds / baseline:>15.3f} | "
              f"{'yes' if torch_imported else 'no':>13}")
    slowest = max(rows, key=lambda row: row[1])
    heavy = [label for label, _, torch_imported in rows if torch_imported]
    print(f"slowest: {slowest[0]} {slowest[1]:.3f} s ({slowest[1] / baseline:.2f}x import torch); "
          f"commands that import torch: {len(heavy)} of {len(rows)}")


if __name__ == "__main__":
    main()
