"""Markdown tables of a world run's results (mean ± std over seeds, in %)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.world.evaluation import OOD_SETS

ROWS = [("msp", "A"), ("maxlogit", "A"), ("energy", "A"), ("mcm", "A"), ("neglabel", "A"), ("plp", "A"),
        ("ctw", "generic"), ("atd", "generic"), ("ctw", "new-vocabulary"), ("atd", "new-vocabulary"), ("mcm", "B")]
LABELS = {"A": "world A", "B": "world B (heads saw ID names only)", "generic": "no-branch: generic",
          "new-vocabulary": "no-branch: new vocabulary"}


def mean_std(values: list[float | None]) -> str:
    """``mean ± std`` in percent (std left out for one value; n/a for none)."""
    present = [100 * v for v in values if v is not None]
    if not present:
        return "n/a"
    if len(present) == 1:
        return f"{present[0]:.1f}"
    return f"{statistics.fmean(present):.1f} ± {statistics.stdev(present):.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _pick(runs: list[dict], model: str, method: str, *path: str) -> list[float | None]:
    out: list[float | None] = []
    for run in runs:
        value: Any = run["reports"].get(model, {}).get(method)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(value)
    return out


def quality_tables(runs: list[dict]) -> str:
    """One table per OOD set: every method's AUROC, FPR95 (both conventions), AUPR-in/out and ID accuracy."""
    parts = []
    for ood in OOD_SETS:
        header = ["method", "model", "AUROC ↑", "FPR95 ↓", "FPR95 OpenOOD ↓", "AUPR-in ↑", "AUPR-out ↑", "ID acc"]
        rows = [[method, LABELS[model], *(mean_std(_pick(runs, model, method, ood, k))
                                          for k in ("auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out")),
                 mean_std(_pick(runs, model, method, "id_accuracy"))] for method, model in ROWS]
        parts.append(f"**OOD = {ood}**\n\n" + _table(header, rows))
    return "\n\n".join(parts)


def decision_table(runs: list[dict]) -> str:
    """The threshold-free rules: share of ID kept and of each OOD set caught."""
    rows = []
    for method, model in [r for r in ROWS if r[0] in ("ctw", "atd")]:
        rows.append([method, LABELS[model], mean_std(_pick(runs, model, method, "id_kept")),
                     *(mean_std(_pick(runs, model, method, "ood_caught", s)) for s in OOD_SETS)])
    return _table(["rule", "model", "ID kept", *(f"{s} caught" for s in OOD_SETS)], rows)


def sweep_table(runs: list[dict]) -> str:
    """ID kept / near-OOD caught / DTD caught by CTW and ATD against the number of ID classes."""
    sizes = sorted({int(k) for run in runs for k in next(iter(run["sweeps"].values()))["ctw"]})
    header = ["classes"]
    columns = []
    for variant in runs[0]["sweeps"]:
        for method in ("ctw", "atd"):
            header.append(f"{method.upper()} ({variant}): ID kept / near caught / DTD caught")
            columns.append((variant, method))
    rows = []
    for k in sizes:
        row = [str(k)]
        for variant, method in columns:
            cells = [mean_std([run["sweeps"][variant][method].get(k, run["sweeps"][variant][method].get(str(k)))[key]
                               for run in runs]) for key in ("id_kept", "near_caught", "dtd_caught")]
            row.append(" / ".join(cells))
        rows.append(row)
    return _table(header, rows)


def world_table(runs: list[dict]) -> str:
    """The worlds' own zero-shot accuracy."""
    rows = []
    for kind in ("A", "B"):
        rows.append([LABELS[kind], *(mean_std([run["worlds"][kind][k] for run in runs])
                                     for k in ("tiny_top1", "id_top1", "imagenet_top1", "imagenet_top5"))])
    return _table(["world", "Tiny 200-way top-1", "ID 100-way top-1", "ImageNet-sample top-1", "top-5"], rows)


def training_table(runs: list[dict]) -> str:
    """The no-branch trainings: held-out separation (validation CTW AUROC) and time."""
    rows = []
    for variant in runs[0]["training"]:
        rows.append([variant, mean_std([run["training"][variant]["val_ctw_auroc"] for run in runs]),
                     f"{statistics.fmean(run['training'][variant]['seconds'] for run in runs):.0f} s"])
    return _table(["no-branch", "held-out separation (val CTW AUROC)", "time per seed"], rows)


def timing_table(results: dict) -> str:
    """Wall-clock of each stage, summed over seeds."""
    stages: dict[str, float] = {"frozen-tower features": results["feature_seconds"]}
    for run in results["runs"]:
        for stage, seconds in run["timings"].items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    stages["total"] = results["total_seconds"]
    return _table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in stages.items()])


def write_tables(results: dict, path: Path) -> str:
    """All tables as one markdown text, written to ``path`` and returned."""
    runs = results["runs"]
    checks = max(run["scan_check"] for run in runs)
    text = "\n\n".join([
        f"## Worlds ({len(runs)} seed(s))\n\n" + world_table(runs),
        "## OOD detection (%, mean ± std over seeds)\n\n" + quality_tables(runs),
        "## Threshold-free decisions (CTW, ATD), 100 ID classes\n\n" + decision_table(runs),
        "## Decisions against the class-list size\n\n" + sweep_table(runs),
        "## No-branch training\n\n" + training_table(runs),
        "## Wall-clock\n\n" + timing_table(results),
        f"Scores from cached features equal `oodfilter.score_files` on the image files: max |diff| {checks:.1e}.",
    ])
    path.write_text(text + "\n")
    return text
