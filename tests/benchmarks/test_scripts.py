"""Every benchmark script runs through its documented smoke command (``--quick``) and prints a sane table.

The figures of a smoke run measure nothing; the tests check that each script goes end to end and that its
table holds what it says: the rows it promises, positive finite rates, ratios that agree with their rates.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
Table = list[dict[str, str]]


def table(stdout: str, first_column: str) -> Table:
    """The rows of the table whose header starts with ``first_column``, as {column: cell}."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.split("|")[0].strip() == first_column), None)
    assert start is not None, f"no table headed {first_column!r} in:\n{stdout}"
    header = [cell.strip() for cell in lines[start].split("|")]
    assert set(lines[start + 1]) == {"-"}, lines[start + 1]
    rows = []
    for line in lines[start + 2:]:
        if "|" not in line:
            break
        cells = [cell.strip() for cell in line.split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells)))
    return rows


def positive(cell: str) -> float:
    """The cell's number, asserted finite and > 0."""
    value = float(cell.rstrip("%"))
    assert math.isfinite(value) and value > 0, cell
    return value


def check_class_vectors(stdout: str) -> None:
    check_caption_encoding(stdout)
    rows = table(stdout, "names")
    assert [row["names"] for row in rows] == ["20", "100"]
    assert [row["captions"] for row in rows] == ["20", "100"]  # one "photo" template
    # 20 names fit in the 40 cold captions: measured; 100 do not: extrapolated from 40 and marked "~"
    assert [row["cold names"] for row in rows] == ["20", "40"]
    assert not rows[0]["cold s (all)"].startswith("~") and rows[1]["cold s (all)"].startswith("~")
    for row in rows:
        for column in ("cold meas s", "warm load s", "cold s (all)", "cold/warm"):
            value = float(row[column].lstrip("~ "))
            assert math.isfinite(value) and value >= 0, (column, row)
        faiss, matmul = positive(row["top5 FAISS ms"]), positive(row["top5 matmul ms"])
        assert positive(row["matmul/FAISS"]) == pytest.approx(matmul / faiss, rel=0.1, abs=0.01)
        assert float(row["agree"]) >= 0.98  # FAISS and the matrix product find the same nearest class


def check_caption_encoding(stdout: str) -> None:
    """The old (full context) vs new (cut batches) table: both towers, rates that agree, the same vectors."""
    population = re.search(r"= (\d+) captions per tower; (\d+) drawn at random", stdout)
    assert population is not None, stdout
    assert population.groups() == ("12800", "48")  # --quick: 100 names x 128 clipn templates; the sample
    rows = table(stdout, "tower")
    assert [row["tower"] for row in rows] == ["yes", "no"]
    builds = []
    for row in rows:
        assert row["captions"] == "48"
        full, cut = positive(row["full cap/s"]), positive(row["cut cap/s"])
        assert positive(row["cut/full"]) == pytest.approx(cut / full, rel=0.01, abs=0.01)
        assert float(row["max diff"]) <= 1e-5  # the cut batches give the full context's vectors
        sample_pos, whole_pos = positive(row["sample pos/cap"]), positive(row["whole pos/cap"])
        assert whole_pos <= sample_pos < 77  # cut batches, tighter over the whole sorted set than in a sample
        builds.append((12800 / full, 12800 * whole_pos / (cut * sample_pos)))
        assert positive(row["full build h"]) == pytest.approx(builds[-1][0] / 3600, rel=0.02)  # 3 digits shown
        assert positive(row["cut build h"]) == pytest.approx(builds[-1][1] / 3600, rel=0.02)
    summary = re.search(r"full context ~([\d.e+-]+) h, cut ~([\d.e+-]+) h: ([\d.]+)x", stdout)
    assert summary is not None, stdout
    old_h, new_h, ratio = (float(group) for group in summary.groups())
    old_s, new_s = sum(old for old, _ in builds), sum(new for _, new in builds)
    assert old_h == pytest.approx(old_s / 3600, rel=0.02) and new_h == pytest.approx(new_s / 3600, rel=0.02)
    assert ratio == pytest.approx(old_s / new_s, rel=0.02, abs=0.01)


def check_scan_throughput(stdout: str) -> None:
    rows = table(stdout, "path")
    precisions = [row["path"].rsplit(", ", 1)[1] for row in rows if row["path"].startswith("(a)")]
    assert precisions == ["fp32", "bf16", "int8"]  # int8 on the CPU
    assert [row["path"][:3] for row in rows] == ["(a)", "(b)"] * len(precisions) + ["(c)"]
    forward = {row["path"].rsplit(", ", 1)[1]: positive(row["images/s"]) for row in rows[:-1]
               if row["path"].startswith("(a)")}
    scans = {row["path"].rsplit(", ", 1)[1]: positive(row["images/s"]) for row in rows[:-1]
             if row["path"].startswith("(b)")}
    for row in rows[:-1]:
        precision = row["path"].rsplit(", ", 1)[1]
        own = forward[precision]
        assert positive(row["vs forward"]) == pytest.approx(positive(row["images/s"]) / own, abs=0.01)
        base = forward["fp32"] if row["path"].startswith("(a)") else scans["fp32"]
        assert positive(row["vs fp32"]) == pytest.approx(positive(row["images/s"]) / base, abs=0.01)
    summary = re.search(r"scan / naive = ([\d.]+)x \(fp32\); scan bf16 / scan fp32 = ([\d.]+)x; scan workers = (\d+)",
                        stdout)
    assert summary is not None, stdout
    assert float(summary.group(2)) == pytest.approx(scans["bf16"] / scans["fp32"], abs=0.01)
    positive(summary.group(1))


def check_finetune_throughput(stdout: str) -> None:
    (row,) = table(stdout, "model")
    assert row["model"] == "test-tiny" and row["batch"] == "64"
    for column in ("trainable M", "peak MiB"):
        positive(row[column])
    train, forward = positive(row["train/s"]), positive(row["forward/s"])
    assert positive(row["train/forward"]) == pytest.approx(train / forward, rel=0.05, abs=0.01)


def check_loader_overhead(stdout: str) -> None:
    rows = table(stdout, "loader")
    assert [row["loader"] for row in rows] == ["plain", "online", "manifest"]
    assert stdout.startswith("32 DTD images")
    plain = positive(rows[0]["samples/s"])
    assert rows[0]["vs plain"] == "1.000" and rows[0]["overhead"] == "0.0%"
    for row in rows[1:]:
        ratio = positive(row["vs plain"])
        assert ratio == pytest.approx(positive(row["samples/s"]) / plain, rel=0.01, abs=0.002)
        assert float(row["overhead"].rstrip("%")) == pytest.approx(100 * (1 - ratio), abs=0.2)


def check_engines(stdout: str) -> None:
    rows = table(stdout, "engine")
    assert [row["engine"] for row in rows] == ["local", "ray"]
    local = positive(rows[0]["images/s"])
    assert rows[0]["vs local"] == "1.00"
    assert positive(rows[1]["vs local"]) == pytest.approx(positive(rows[1]["images/s"]) / local, abs=0.01)
    flops = re.search(r"forward ([\d.e+-]+) GFLOP/image; local scan \((\w+)\) reaches ([\d.]+)% of the measured "
                      r"([\d.e+-]+) TFLOP/s torch\.\w+ matmul peak", stdout)
    assert flops is not None, stdout
    assert float(flops.group(1)) > 0 and float(flops.group(4)) > 0 and flops.group(2) in ("fp32", "bf16")
    expected = local * float(flops.group(1)) * 1e9 / (float(flops.group(4)) * 1e12)
    assert float(flops.group(3)) == pytest.approx(100 * expected, rel=0.02, abs=0.11)


def check_rescore(stdout: str) -> None:
    rows = table(stdout, "path")
    assert [row["path"][:3] for row in rows] == ["(a)", "(b)"]
    assert rows[0]["speed-up"] == "1.0"
    rescan, again = positive(rows[0]["seconds"]), positive(rows[1]["seconds"])
    assert positive(rows[1]["speed-up"]) == pytest.approx(rescan / again, rel=0.05, abs=0.1)  # 4 decimals shown
    summary = re.search(r"max abs score diff = ([\d.e+-]+); decisions and top classes identical: (\w+); "
                        r"stored: (\d+) bytes per image \(float16 x (\d+)\)", stdout)
    assert summary is not None, stdout
    assert float(summary.group(1)) <= 1e-3 and summary.group(2) == "True"
    assert int(summary.group(3)) == 2 * int(summary.group(4))


# script name -> (needs ../shared/data, what its output must show)
def markdown_tables(stdout: str) -> list[list[dict[str, str]]]:
    """Every markdown table in the output, as lists of {column: cell}."""
    tables, lines = [], stdout.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("|-") and set(lines[i + 1]) <= {"|", "-"}:
            header = [cell.strip() for cell in line.strip("|").split("|")]
            rows = []
            for body in lines[i + 2:]:
                if not body.startswith("|"):
                    break
                cells = [cell.strip() for cell in body.strip("|").split("|")]
                assert len(cells) == len(header), body
                rows.append(dict(zip(header, cells)))
            tables.append(rows)
    return tables


def check_precision(stdout: str) -> None:
    assert re.search(r"CPU: (native bf16|no native bf16)", stdout), stdout
    assert "**World A, seed 0, generic no-branch**" in stdout and "**test-tiny, random weights" in stdout
    world, vit = markdown_tables(stdout)
    methods = ["msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"]
    assert [row["method"] for row in world] == [m for m in methods for _ in range(3)]
    assert [row["precision"] for row in world] == ["fp32", "bf16", "int8"] * len(methods)
    assert [row["method"] for row in vit] == [m for m in methods[:4] for _ in range(3)]
    for row in world + vit:
        if row["precision"] != "fp32":
            assert float(row["max abs score diff"]) >= 0
            assert 0 <= float(row["decisions differing, at fp32 median"].rstrip("%")) <= 100
    own = [row["decisions differing, own rule"] for row in world if row["precision"] != "fp32"]
    assert own[0] == "n/a" and "n/a" not in own[-4:]  # MSP has no rule; CTW and ATD do
    for row in world:
        near, dtd = row["AUROC near / DTD"].split(" / ")
        assert 0 <= float(near) <= 100 and 0 <= float(dtd) <= 100
    assert re.search(r"bf16: at most [\d.]+% of decisions differ", stdout), stdout


def check_scale(stdout: str) -> None:
    rows = table(stdout, "stage")
    assert [(row["stage"], row["rows"]) for row in rows] == [(stage, rows) for stage in ("resume", "summary", "report")
                                                             for rows in ("2000", "20000")]
    for row in rows:
        positive(row["peak RSS MB"])
        positive(row["baseline MB"])
        assert positive(row["MB vs baseline"]) == pytest.approx(
            float(row["peak RSS MB"]) / float(row["baseline MB"]), abs=0.05)  # both MB rounded
    assert len(re.findall(r"10x the rows -> [\d.-]+x the memory above the floor", stdout)) == 3, stdout


def check_adaptive(stdout: str) -> None:
    assert re.search(r"^CPU: .+; \d+ cores; model test-tiny", stdout, re.MULTILINE), stdout
    rows = table(stdout, "rows")
    assert [row["rows"] for row in rows] == ["20000", "200000"]
    for row in rows:
        assert int(row["negatives"]) >= 1  # the planted junk directions give the pass negatives to build
        positive(row["stream s"])
        positive(row["baseline s"])
    large = rows[-1]
    # the held-whole pass holds the (N, D) float32 array (25.6 MB at 200k x 32); the streamed one a few
    # numbers per image
    assert float(large["baseline MB above floor"]) >= 20
    assert float(large["stream MB above floor"]) < float(large["baseline MB above floor"]) / 2
    assert all(float(row["max score diff"]) == 0 for row in rows)  # the same pass, whatever holds the features
    assert re.search(r"\(\d+ bytes per row at 200000 rows\)", stdout), stdout


def check_remote(stdout: str) -> None:
    rows = {row["source"]: row for row in table(stdout, "source")}
    assert list(rows) == ["local files", "WebDataset shards (local)", "S3 server on 127.0.0.1 (moto)",
                          "HTTP server on 127.0.0.1"]
    assert rows["local files"]["vs local"] == "1.00"
    for row in rows.values():  # the dev extra has moto and s3fs, so every source is measured
        assert positive(row["vs local"]) == pytest.approx(positive(row["images/s"]) / positive(
            rows["local files"]["images/s"]), abs=0.01)


def check_startup(stdout: str) -> None:
    assert re.search(r"^CPU: .+ \(\d+ logical cores\)", stdout, re.MULTILINE), stdout
    baseline = re.search(r'baseline: python -c "import torch" ([\d.]+) s; python -c "pass" ([\d.]+) s', stdout)
    assert baseline is not None, stdout
    torch_seconds = positive(baseline.group(1))
    rows = table(stdout, "command")
    assert [row["command"] for row in rows] == ["oodfilter --help", "oodfilter --version", "oodfilter scan --help",
                                                "oodfilter models", "oodfilter plugins", "scan: missing class file"]
    for row in rows:
        assert positive(row["vs import torch"]) == pytest.approx(positive(row["seconds"]) / torch_seconds, abs=0.002)
        assert row["imports torch"] == "no", row  # what the script measures: none of these needs torch
    assert re.search(r"slowest: .+ [\d.]+ s \([\d.]+x import torch\); commands that import torch: 0 of 6", stdout)


def check_decode(stdout: str) -> None:
    assert re.search(r"^CPU: .+; \d+ cores", stdout, re.MULTILINE), stdout
    speed, world = markdown_tables(stdout)
    assert [row["path"] for row in speed] == ["decode + preprocess", "scan, test-tiny fp32"]
    for row in speed:
        ratio = positive(row["draft images/s"]) / positive(row["full images/s"])
        assert positive(row["draft / full"]) == pytest.approx(ratio, abs=0.01)
    methods = ["msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"]
    assert [row["method"] for row in world] == methods
    for row in world:
        assert float(row["max abs score diff"]) >= 0
        for column in ("differ, calibrated 95%", "differ, each calibrated 95%"):  # the quick world has 25 ID images
            assert 0 <= float(row[column].rstrip("%")) <= 100
        assert (row["differ, own rule"] == "n/a") == (row["method"] not in ("ctw", "atd"))
    assert re.search(r"agreement at the calibrated 95% ID recall: at least [\d.]+% .*bar 99\.5%: (met|not met)",
                     stdout), stdout


def check_dataset_aware(stdout: str) -> None:
    assert re.search(r"^CPU: .+; \d+ cores", stdout, re.MULTILINE), stdout
    listed = re.search(r"^methods: (.+); adaptive pass on: (.+)$", stdout, re.MULTILINE)
    assert listed is not None, stdout
    methods = listed.group(1).split(", ")
    adapted = [] if listed.group(2).startswith("none") else [f"{m}+adapt" for m in listed.group(2).split(", ")]
    assert methods[:8] == ["msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"]
    assert set(methods[8:]) <= {"knn", "mahalanobis", "csp", "fused"}
    whole, *mixtures = markdown_tables(stdout)
    assert len(mixtures) == 4  # AUROC, FPR95, caught, ID kept
    assert [row["method"] for row in whole] == methods + adapted
    columns = [f"{s} {f}%" for s in ("near-OOD", "DTD") for f in (10, 30, 50)]
    for rows in [whole, *mixtures]:
        assert [row["method"] for row in rows] == methods + adapted
        for row in rows:
            assert all(0 <= float(cell) <= 100 for key, cell in row.items() if key != "method"), row
    assert all(list(row)[1:] == columns for row in mixtures[0])
    # A method that does not learn from the scan keeps the same scanned ID images at the same threshold in
    # every scan: its ID kept is one figure, whole sets and mixtures alike.
    id_kept = {row["method"]: row for row in mixtures[3]}
    for row in whole:
        if not row["method"].endswith("+adapt"):
            assert {id_kept[row["method"]][c] for c in columns} == {row["ID kept"]}, row


SCRIPTS: dict[str, tuple[bool, Callable[[str], None]]] = {
    "class_vectors": (False, check_class_vectors),  # WordNet names when present, generated ones otherwise
    "scan_throughput": (True, check_scan_throughput),
    "finetune_throughput": (False, check_finetune_throughput),
    "loader_overhead": (True, check_loader_overhead),
    "engines": (True, check_engines),
    "rescore": (True, check_rescore),
    "precision": (True, check_precision),
    "scale": (False, check_scale),
    "remote": (True, check_remote),
    "startup": (False, check_startup),
    "decode": (True, check_decode),
    "world/dataset_aware": (True, check_dataset_aware),
    "adaptive": (False, check_adaptive),
}
# Scripts of benchmarks/world registered here (the others are run by tests/benchmarks/test_world.py).
WORLD_SCRIPTS = {"world/dataset_aware"}


def test_every_benchmark_script_has_a_documented_smoke_run() -> None:
    # a script is a file that runs as __main__; the rest (machine.py) are modules the scripts import
    scripts = {
        path.stem
        for path in (ROOT / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    } | WORLD_SCRIPTS
    assert scripts == set(SCRIPTS), "add the new script's --quick run to SCRIPTS"
    assert "machine" not in scripts
    for name in scripts:
        assert f"Smoke: python benchmarks/{name}.py --quick\n" in (ROOT / "benchmarks" / f"{name}.py").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_quick_run_prints_its_table(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    needs_data, check = SCRIPTS[name]
    if needs_data:
        request.getfixturevalue("shared_data")  # the scripts find ../shared/data themselves; skips without it
    # One torch thread: a smoke run measures nothing, and spinning threads on a busy machine make it crawl.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OODFILTER_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--quick"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    check(result.stdout)
