"""Dataset-aware filtering on the benchmark world: every method on near-OOD, DTD and scan-like mixtures.

Run:   python benchmarks/world/dataset_aware.py [--seeds 3] [--out world_dataset_aware]
Smoke: python benchmarks/world/dataset_aware.py --quick

Needs the ``bench`` extra and reuses run.py's cache (world A and its generic no-branch per seed; built here
when missing, ~5 min a seed on 2 cores). The cache key holds the images' paths: point
``$OODFILTER_SHARED_DATA`` at the same data folder run.py used (a checkout elsewhere finds ``../shared/data``
under another path and builds the worlds again). With the worlds cached, the first run encodes NegLabel's
and CSP's candidate captions per seed (~8 min a seed on 2 shared cores, cached afterwards); a run on a
warm cache takes a few minutes. Per seed, on world A with the generic no-branch, from image features
computed once:

* The 1000 held-out ID images are split at random (per seed) into a **calibration half**, the reference
  ID images a user would calibrate on, never scanned, and a **scanned half**.
* **Scans**: the scanned ID images plus the whole near-OOD set (held-out images of the other 100 Tiny
  classes) or the whole DTD set, and **mixtures** where OOD is 10%, 30% or 50% of the folder (near-OOD or
  DTD images drawn per seed; see ``mixtures.py``).
* **Methods**: msp, maxlogit, energy, mcm, neglabel, plp, ctw, atd, and those that are installed of knn,
  mahalanobis (built in), csp and fused (plugin ``oodfilter-csp``, loaded from ``plugins/`` when not
  installed). plp, knn and mahalanobis are fitted on the ID classes' *training* images, as on a user's own
  labelled set. The **adaptive pass** (``oodfilter.scoring.adaptive``, when present) runs on top of atd,
  mcm, fused and csp on each scan as a whole, since it learns from the scan.
* **Figures** per scan: AUROC, FPR95 (CLIPN convention: OOD kept at 95% ID recall on the scan) and the
  share of OOD caught (and of scanned ID kept) at the threshold calibrated for 95% ID recall on the
  calibration half.
Prints mean ± std over seeds as markdown tables; with --out writes dataset_aware.json and dataset_aware.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

import oodfilter
from benchmarks.machine import cpu_name
from benchmarks.world.build import WORLD_TEMPLATES, FeatureBank, load_feature_bank
from benchmarks.world.data import WorldData, load_world_data
from benchmarks.world.evaluation import eval_sets, make_scorer
from benchmarks.world.mixtures import FRACTIONS, calibrated_threshold, scan_metrics, scenarios, split_id
from benchmarks.world.run import QUICK_DATA, TEMPLATES, generic_no_branch_model, negative_labels
from benchmarks.world.tables import mean_std
from oodfilter.errors import UnknownNameError
from oodfilter.scoring.methods import score_methods

REPO = Path(__file__).resolve().parents[2]
BASE_METHODS = ["msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"]
NEW_METHODS = ["knn", "mahalanobis", "csp", "fused"]  # measured when installed (issue 29)
FITTED = {"plp", "knn", "mahalanobis"}  # fitted on the ID classes' training images
ADAPT_BASES = ["atd", "mcm", "fused", "csp"]  # first passes the adaptive pass runs on, when present
OOD_SETS = ("near", "dtd")
SHOWN = {"near": "near-OOD", "dtd": "DTD"}
QUICK_WORLD: dict[str, Any] = {**QUICK_DATA, "per_class": None, "textures_every": 30}


def scorer_entry_points(pyproject: str) -> dict[str, str]:
    """``name = "module:attribute"`` lines of a pyproject's ``oodfilter.scorers`` entry-point table (Python
    3.10 has no TOML reader)."""
    table = re.search(r'^\[project\.entry-points\."oodfilter\.scorers"\]\n(.*?)(?=^\[|\Z)', pyproject,
                      re.MULTILINE | re.DOTALL)
    lines = table.group(1).splitlines() if table else []
    return dict(re.findall(r'^\s*([\w-]+)\s*=\s*"([\w.]+:[\w.]+)"', "\n".join(lines), re.MULTILINE))


def register_repo_plugins(names: list[str]) -> None:
    """Register score methods of ``names`` that no installed plugin provides from the repository's
    ``plugins/*`` folders (their ``oodfilter.scorers`` entry points), so an unmerged install still measures."""
    for pyproject in sorted((REPO / "plugins").glob("*/pyproject.toml")):
        for name, target in scorer_entry_points(pyproject.read_text()).items():
            if name not in names:
                continue
            try:
                score_methods.check_known(name)
                continue
            except UnknownNameError:
                pass
            sys.path.insert(0, str(pyproject.parent))
            module, _, attribute = target.partition(":")
            score_methods.add(name, getattr(importlib.import_module(module), attribute), source=pyproject.parent.name)


def available_methods() -> list[str]:
    """The existing methods, then those of :data:`NEW_METHODS` that are registered here."""
    register_repo_plugins(NEW_METHODS)
    found = []
    for name in NEW_METHODS:
        try:
            score_methods.check_known(name)
        except UnknownNameError:
            continue
        found.append(name)
    return BASE_METHODS + found


def adaptive_pass() -> ModuleType | None:
    """``oodfilter.scoring.adaptive`` when this install has it."""
    try:
        return importlib.import_module("oodfilter.scoring.adaptive")
    except ImportError:
        return None


def negative_pool(method: str, quick: bool) -> Any:
    """CSP or fused over the same nouns as NegLabel here (every other word of its vocabulary; every 200th and
    every 50th modifier in the quick run), candidates encoded with the single photo template as NegLabel's."""
    from oodfilter_neglabel import load_vocabulary

    nouns = list(load_vocabulary())[:: 200 if quick else 2]
    options: dict[str, Any] = {"groups": 10} if quick else {}
    if quick:
        from oodfilter_csp.pool import load_modifiers

        options["modifiers"] = list(load_modifiers())[::50]
    factory: Any = score_methods.get(method)  # the plugin's class: its own options
    return factory(nouns, templates="photo", **options)


def build_scorer(model: oodfilter.CLIPN, method: str, names: list[str], cache: Path, features: dict,
                 quick: bool) -> oodfilter.Scorer:
    """oodfilter's scorer for ``method`` as run.py builds it (NegLabel and CSP with their papers' single
    template; fused's ID classes with the ensemble, like ATD's)."""
    chosen: Any = method
    if method == "neglabel":
        chosen = negative_labels(quick)
    elif method in ("csp", "fused"):
        chosen = negative_pool(method, quick)
    templates = "photo" if method in ("neglabel", "csp") else TEMPLATES
    reference = features["id-train"] if method in FITTED else None
    return make_scorer(model, names, chosen, cache, templates, reference=reference)


def adaptive_scan(adaptive: ModuleType, scorer: oodfilter.Scorer, scan: torch.Tensor,
                  calibration: torch.Tensor) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Adapted scores of the scanned images and of the calibration images, and what the pass used.

    The pass learns its proxies from the scan alone; the calibration images (never scanned) are scored
    against the scan's proxies (``score_with_proxies``), as ``oodfilter rescore --adapt --calibrate-on``
    fits its threshold. An install without that scores them in the same pass as the scan, appended to it.
    """
    further = getattr(adaptive, "score_with_proxies", None)
    if further is not None:
        result = adaptive.adaptive_scores(scorer, scan)
        calibration_scores = further(scorer, result.proxies, calibration)
        meta = {**result.meta, "calibration": "scored against the scan's proxies"}
        return (np.asarray(result.ood_score, dtype=np.float64), np.asarray(calibration_scores, dtype=np.float64),
                meta)
    result = adaptive.adaptive_scores(scorer, torch.cat([scan, calibration]))
    scores = np.asarray(result.ood_score, dtype=np.float64)
    return scores[: len(scan)], scores[len(scan):], {**result.meta, "calibration": "in the same pass as the scan"}


def measure_seed(seed: int, data: WorldData, bank: FeatureBank, cache: Path, methods: list[str], adapt_bases: list[str],
                 adaptive: ModuleType | None, quick: bool, log: Callable[[str], None]) -> dict:
    """Every method and adaptive pass on every scan of one seed."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as trees:
        model = generic_no_branch_model(data, bank, cache, seed, quick, Path(trees))
    sets = eval_sets(data)
    features = sets.features(model, bank)
    names = [data.names[c] for c in data.id_classes]
    split = split_id(len(features["id"]), seed)
    scans = scenarios(len(split.scan), {s: len(features[s]) for s in OOD_SETS}, seed,
                      FRACTIONS)
    run: dict[str, Any] = {"seed": seed, "calibration_images": len(split.calibration),
                           "scanned_id_images": len(split.scan),
                           "scans": {s.name: len(s.ood_index) for s in scans}, "methods": {}, "seconds": {}}
    log(f"seed {seed}: model and features ready ({time.perf_counter() - started:.0f} s)")
    scorers: dict[str, oodfilter.Scorer] = {}
    for method in methods:
        mark = time.perf_counter()
        scorers[method] = scorer = build_scorer(model, method, names, cache, features, quick)
        scores = {name: scorer.score_features(features[name]).ood_score.double().numpy()
                  for name in ("id", *OOD_SETS)}
        threshold = calibrated_threshold(scores["id"][split.calibration])
        run["methods"][method] = {s.name: scan_metrics(scores["id"][split.scan], scores[s.ood_set][s.ood_index],
                                                       threshold) for s in scans}
        run["seconds"][method] = time.perf_counter() - mark
        log(f"seed {seed}: {method} ({run['seconds'][method]:.1f} s)")
    for base in adapt_bases if adaptive is not None else []:
        mark, label = time.perf_counter(), f"{base}+adapt"
        run["methods"][label], run.setdefault("adapt_meta", {})[label] = {}, {}
        for s in scans:
            scan = torch.cat([features["id"][split.scan], features[s.ood_set][s.ood_index]])
            scan_scores, calibration_scores, meta = adaptive_scan(adaptive, scorers[base], scan,  # type: ignore[arg-type]
                                                                  features["id"][split.calibration])
            run["methods"][label][s.name] = scan_metrics(scan_scores[: len(split.scan)],
                                                         scan_scores[len(split.scan):],
                                                         calibrated_threshold(calibration_scores))
            run["adapt_meta"][label][s.name] = meta
        run["seconds"][label] = time.perf_counter() - mark
        log(f"seed {seed}: {label} on {len(scans)} scans ({run['seconds'][label]:.1f} s)")
    run["seconds"]["total"] = time.perf_counter() - started
    return run


def _cells(runs: list[dict], method: str, scan: str, key: str) -> str:
    return mean_std([run["methods"].get(method, {}).get(scan, {}).get(key) for run in runs])


def tables(runs: list[dict], fractions: tuple[float, ...] = FRACTIONS) -> str:
    """Markdown tables: the whole sets, then one table per figure over the mixtures."""
    methods = list(dict.fromkeys(m for run in runs for m in run["methods"]))
    head = runs[0]
    lines = [f"**Whole sets** (scan = {head['scanned_id_images']} ID images + every near-OOD ({head['scans']['near']}) "
             f"or DTD ({head['scans']['dtd']}) image; caught / ID kept at the threshold calibrated for 95% ID "
             f"recall on the {head['calibration_images']} calibration ID images; %, mean ± std over "
             f"{len(runs)} seed(s))", "",
             "| method | near AUROC | near FPR95 | near caught | DTD AUROC | DTD FPR95 | DTD caught | ID kept |",
             "|---|---|---|---|---|---|---|---|"]
    for method in methods:
        cells = [_cells(runs, method, s, key) for s in OOD_SETS for key in ("auroc", "fpr95", "caught")]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {_cells(runs, method, 'near', 'id_kept')} |")
    mixtures = [f"{s} {f:.0%}" for s in OOD_SETS for f in fractions]
    shown = [f"{SHOWN[s]} {f:.0%}" for s in OOD_SETS for f in fractions]
    for key, title in (("auroc", "AUROC"), ("fpr95", "FPR95 (OOD kept at 95% ID recall of the scan)"),
                       ("caught", "OOD caught at the calibrated 95% threshold"),
                       ("id_kept", "scanned ID kept at the calibrated 95% threshold")):
        lines += ["", f"**Mixtures: {title}** (OOD = {', '.join(f'{f:.0%}' for f in fractions)} of the scan; %)", "",
                  "| method | " + " | ".join(shown) + " |", "|---|" + "---|" * len(mixtures)]
        for method in methods:
            lines.append(f"| {method} | " + " | ".join(_cells(runs, method, s, key) for s in mixtures) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="folder for dataset_aware.json and dataset_aware.md")
    parser.add_argument("--cache-dir", default=str(oodfilter.text.default_cache_dir() / "world"))
    parser.add_argument("--no-adapt", action="store_true", help="leave the adaptive pass out")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny data, 2-step no-branch, 1 seed)")
    args = parser.parse_args()
    log = lambda message: print(message, flush=True)  # noqa: E731
    started = time.perf_counter()
    cache = Path(args.cache_dir)
    # quick: 10 classes with all their images, so each calibration half (25) reaches the 20 images 95% needs,
    # and 40 DTD images, so a 50% mixture (25) can be drawn
    data = load_world_data(**QUICK_WORLD) if args.quick else load_world_data()
    bank = load_feature_bank(data, cache, templates=WORLD_TEMPLATES[:2] if args.quick else WORLD_TEMPLATES)
    methods = available_methods()
    adaptive = None if args.no_adapt else adaptive_pass()
    adapt_bases = [m for m in ADAPT_BASES if m in methods] if adaptive is not None else []
    log(f"CPU: {cpu_name()}; {os.cpu_count()} cores; torch {torch.__version__}; {torch.get_num_threads()} threads")
    log(f"methods: {', '.join(methods)}; adaptive pass on: {', '.join(adapt_bases) or 'none (not installed)'}")
    seeds = 1 if args.quick else args.seeds
    runs = [measure_seed(seed, data, bank, cache, methods, adapt_bases, adaptive, args.quick, log)
            for seed in range(seeds)]
    seconds = time.perf_counter() - started
    text = f"**World A, generic no-branch, seeds 0-{seeds - 1}**\n\n" + tables(runs)
    print(text)
    log(f"{seconds:.0f} s in all")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "dataset_aware.md").write_text(text + "\n")
        (out / "dataset_aware.json").write_text(json.dumps(
            {"args": vars(args), "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
             "methods": methods, "adapt_bases": adapt_bases, "runs": runs, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
