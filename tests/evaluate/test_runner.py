"""`oodfilter eval`: one feature pass, many methods, numbers that match the metric functions."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.evaluate import metrics
from oodfilter.evaluate.runner import EvalConfig, evaluate


def _rows(scorer, paths):
    """Every row of ``paths``, in order (score_files yields them batch by batch)."""
    return [row for rows in oodfilter.score_files(scorer, paths) for row in rows]



@pytest.fixture(scope="module")
def coloured_sets(tmp_path_factory):
    """ID: reddish images; OOD: two sets of other images (generated; no shared data needed)."""
    root = tmp_path_factory.mktemp("sets")
    rng = np.random.default_rng(0)
    for name, base in (("id", (200, 40, 40)), ("far", (20, 20, 220)), ("near", (150, 90, 60))):
        (root / name).mkdir()
        for i in range(10):
            pixels = np.clip(np.array(base) + rng.normal(0, 25, (36, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_metrics_match_saved_scores_and_files_are_written(tiny_model, coloured_sets, tmp_path):
    out = tmp_path / "results.json"
    report = evaluate(EvalConfig(classes=["red thing", "crimson object"], id=str(coloured_sets / "id"),
                                 ood=[str(coloured_sets / "far"), str(coloured_sets / "near")],
                                 methods=["atd", "mcm", "energy"], out=str(out), cache_dir=str(tmp_path)),
                      model=tiny_model)
    saved = json.loads(out.read_text())
    assert saved["methods"] == ["atd", "mcm", "energy"] and saved["sets"] == ["far", "near"]
    for method in saved["methods"]:
        scores = saved["scores"][method]
        assert len(scores["id"]) == len(scores["far"]) == 10
        for name in ("far", "near"):
            row = saved["results"][method][name]
            assert row["auroc"] == pytest.approx(metrics.auroc(scores["id"], scores[name]))
            assert row["fpr95"] == pytest.approx(metrics.fpr_at_95_tpr(scores["id"], scores[name]))
            assert row["aupr_in"] == pytest.approx(metrics.aupr_in(scores["id"], scores[name]))
            assert row["aupr_out"] == pytest.approx(metrics.aupr_out(scores["id"], scores[name]))
        average = saved["results"][method]["average"]["auroc"]
        assert average == pytest.approx((saved["results"][method]["far"]["auroc"] +
                                         saved["results"][method]["near"]["auroc"]) / 2)
        png = out.with_name(f"results.{method}.png")
        with Image.open(png) as image:
            assert image.size == (720, 400)
            legend = image.text["Description"].splitlines()  # the legend names the sets, with each one's AUROC
        assert legend == ["ID (n=10)"] + [
            f"OOD {name} (n=10, AUROC {100 * saved['results'][method][name]['auroc']:.1f}%, FPR95 "
            f"{100 * saved['results'][method][name]['fpr95']:.1f}%)" for name in ("far", "near")]
    # Scores equal those of a Scorer on the same images: one shared feature pass changes nothing.
    index = oodfilter.build_class_vectors(tiny_model, ["red thing", "crimson object"], cache_dir=tmp_path)
    rows = _rows(oodfilter.Scorer(tiny_model, index, "atd"), sorted(str(p) for p in (coloured_sets / "id")
                                                                         .iterdir()))
    np.testing.assert_allclose(report.scores["atd"]["id"], [r.ood_score for r in rows], rtol=1e-5, atol=1e-6)


def test_methods_that_cannot_run(fresh_tiny_model, coloured_sets, tmp_path):
    config = EvalConfig(classes=["red thing"], id=str(coloured_sets / "id"), ood=[str(coloured_sets / "far")],
                        cache_dir=str(tmp_path))
    report = evaluate(config, model=fresh_tiny_model)
    assert "atd" in report.skipped and "mcm" in report.methods
    config.methods = ["atd"]
    with pytest.raises(oodfilter.InputError, match="needs a trained CLIPN no-branch"):
        evaluate(config, model=fresh_tiny_model)
    config.methods = ["nonsense"]
    with pytest.raises(oodfilter.UnknownNameError, match="registered:"):
        evaluate(config, model=fresh_tiny_model)


@pytest.mark.slow
def test_cli_on_imagenet_vs_textures(shared_data, tmp_path):
    sample = shared_data / "imagenet-sample"
    out = tmp_path / "results.json"
    result = CliRunner().invoke(cli, [
        "eval", "--model", "test-tiny", "--classes", str(sample / "classes.txt"), "--id", str(sample / "images"),
        "--id-labels", str(sample / "labels.tsv"), "--ood", str(shared_data / "textures-dtd" / "images"),
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--templates", "photo",
        "--methods", "atd,ctw,msp,maxlogit,energy,mcm"])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["sets"] == ["textures-dtd"]
    assert len(saved["scores"]["atd"]["id"]) == 1000 and len(saved["scores"]["atd"]["textures-dtd"]) == 1200
    for method in saved["methods"]:
        scores = saved["scores"][method]
        auroc = metrics.auroc(scores["id"], scores["textures-dtd"])
        line = next(row for row in result.output.splitlines() if re.match(rf"\W*{method}\s", row))
        assert f"{100 * auroc:.2f}" in line  # the printed table shows the metric of the saved scores
    # top-1 accuracy: the share of ID images whose top class is their label (random weights: near chance)
    assert saved["id_accuracy"] is not None and 0.0 <= saved["id_accuracy"] < 0.05
    assert "ID top-1 accuracy" in result.output


def test_eval_reads_stored_features_of_a_manifest_without_opening_its_images(tiny_model, coloured_sets, tmp_path):
    from oodfilter.scan import ScanConfig, scan

    copy = tmp_path / "id"
    shutil.copytree(coloured_sets / "id", copy)
    manifest = tmp_path / "id.jsonl"
    scan(ScanConfig(inputs=[str(copy)], classes=["red thing"], out=str(manifest), save_features=True, workers=0,
                    cache_dir=str(tmp_path)), model=tiny_model)
    # clipn-clean: with the quoted reference captions these random weights put ATD near 1.0 for every image, where
    # the stored features' float16 rounding reorders near-ties and AUROC stops measuring what is compared here.
    config = dict(classes=["red thing", "crimson object"], ood=[str(coloured_sets / "far")], methods=["atd", "mcm"],
                  cache_dir=str(tmp_path), plots=False, templates="clipn-clean")
    from_images = evaluate(EvalConfig(id=str(coloured_sets / "id"), **config), model=tiny_model)
    shutil.rmtree(copy)  # the images are gone: only the stored features can give the ID scores now
    from_features = evaluate(EvalConfig(id=str(manifest), **config), model=tiny_model)
    for method in ("atd", "mcm"):
        np.testing.assert_allclose(from_features.scores[method]["id"], from_images.scores[method]["id"], atol=1e-3)
        assert from_features.results[method]["far"]["auroc"] == pytest.approx(
            from_images.results[method]["far"]["auroc"], abs=0.02)
