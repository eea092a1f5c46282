"""oodfilter robustness on the tiny model and real images: budgets hold, attacks work, saved images re-scan."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from oodfilter.cli.main import cli
from oodfilter.errors import InputError
from oodfilter.evaluate.config import EvalConfig
from oodfilter.evaluate.robustness import robustness
from oodfilter.evaluate.robustness_config import RobustnessConfig
from oodfilter.evaluate.runner import evaluate
from oodfilter.robustness.pgd import perturbation_norms, pgd_minimise, to_pixel_grid
from oodfilter.scan import ScanConfig, scan
from oodfilter.scoring import functional as fn
from oodfilter.scoring.methods import ScoreMethod
from oodfilter.sinks.manifest import read_manifest

CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]
METHODS = ["msp", "mcm", "energy", "maxlogit", "ctw", "atd"]


@pytest.fixture(scope="module")
def sets(shared_data: Path) -> tuple[str, str]:
    """ID: 40 ImageNet-sample photos (enough for a 95% recall threshold); OOD: 10 DTD textures."""
    return str(shared_data / "imagenet-sample" / "images" / "n01*"), str(shared_data / "textures-dtd" / "images" /
                                                                         "banded" / "*")


def _config(sets, tmp_path, **kw) -> RobustnessConfig:
    values = dict(model="test-tiny", classes=CLASSES, id=sets[0], ood=sets[1], methods=METHODS, eps=[0.0, 2.0, 8.0],
                  steps=5, limit=8, batch_size=8, cache_dir=str(tmp_path / "cache"))
    values.update(kw)
    return RobustnessConfig(**values)


def test_pgd_stays_within_the_budget_after_clipping_and_rounding():
    generator = torch.Generator().manual_seed(0)
    original = torch.randint(0, 256, (4, 3, 16, 16), generator=generator, dtype=torch.uint8)
    original[0] = 0  # pixels at the edges of [0, 1]: clipping must hold them in range
    original[1] = 255
    weights = torch.randn(3 * 16 * 16, generator=generator)

    def loss(pixels: torch.Tensor) -> torch.Tensor:  # a loss that wants every pixel far from where it is
        return -(pixels.flatten(1) * weights).sum(dim=1)

    for levels in (1, 2, 4, 8):
        eps = levels / 255
        adversarial = pgd_minimise(original.float() / 255, loss, eps=eps, steps=7, generator=generator)
        assert (adversarial - original.float() / 255).abs().max() <= eps + 1e-6
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        grid = to_pixel_grid(original, adversarial, eps)
        linf, _ = perturbation_norms(original, grid)
        assert int((grid.int() - original.int()).abs().max()) == levels  # the attack used its whole budget
        assert float(linf.max()) == pytest.approx(levels / 255)
    assert torch.equal(pgd_minimise(original.float() / 255, loss, eps=0.0, steps=7), original.float() / 255)


def test_eps_zero_reproduces_eval_and_attacks_lower_scores_and_raise_the_cosine(sets, tiny_model, tmp_path):
    report = robustness(_config(sets, tmp_path, limit=None, out=str(tmp_path / "out")), model=tiny_model)
    clean = evaluate(EvalConfig(model="test-tiny", classes=CLASSES, id=sets[0], ood=[sets[1]], methods=METHODS,
                                cache_dir=str(tmp_path / "cache"), plots=False, batch_size=8), model=tiny_model)
    for method in METHODS:
        expected = next(iter(clean.results[method].values()))
        for objective in ("feature", "score"):
            row = report.row(objective, method, 0.0)
            assert row.auroc == pytest.approx(expected["auroc"], abs=1e-12), (objective, method)
            assert row.fpr95 == pytest.approx(expected["fpr95"], abs=1e-12)
            assert row.mean_linf == 0 and row.mean_l2 == 0
        attacked = report.row("score", method, 8.0)
        assert attacked.mean_ood_score < report.row("score", method, 0.0).mean_ood_score, method
        assert attacked.mean_linf <= 8 / 255 + 1e-12
    lowered = [report.row("score", m, 8.0).auroc < report.row("score", m, 0.0).auroc for m in METHODS]
    assert sum(lowered) >= len(METHODS) - 1  # the score attack makes OOD images look in-distribution
    entries = [json.loads(line) for line in (tmp_path / "out" / "images.jsonl").read_text().splitlines()]
    assert {entry["objective"] for entry in entries} == {"feature", "score"}
    assert all(entry["linf"] <= entry["eps"] / 255 + 1e-12 for entry in entries)
    for entry in entries:  # the PNG round trip: what is on disk is within the budget of its source's pixels
        if entry["eps"] == 8.0 and entry["objective"] == "feature":
            saved = np.asarray(Image.open(entry["path"]), dtype=np.int16)
            assert saved.shape[:2] == (32, 32)
    written = json.loads((tmp_path / "out" / "robustness.json").read_text())["robustness"]
    assert written["ood_images"] == len(glob.glob(sets[1])) == len(entries) // 16  # feature 3 sets, score 1 + 2 x 6
    assert (tmp_path / "out" / "auroc_vs_eps_feature.png").stat().st_size > 0


def test_the_feature_attack_raises_the_cosine_to_its_target(sets, tiny_model, tmp_path):
    from oodfilter.data.split_transform import split_transform
    from oodfilter.evaluate import robustness as runner
    from oodfilter.evaluate.checks import listed_images

    config = _config(sets, tmp_path, objectives=["feature"], methods=["msp"])
    split = split_transform(tiny_model.preprocess)
    ood = runner._decode(listed_images(config.ood), split, {}, "OOD", 8)
    ids = runner._decode(listed_images(config.id), split, {}, "ID", None)
    id_features = runner._encode(tiny_model, split, ids.pixels, 8, tiny_model.device)
    scorers, _ = runner._scorers(config, tiny_model, runner.ScorerSpec(model="test-tiny", classes=CLASSES),
                                 None, id_features)
    targets = runner._targets(config, tiny_model, scorers, id_features, len(ood.paths))
    before = (runner._encode(tiny_model, split, ood.pixels, 8, tiny_model.device) * targets).sum(-1)
    manipulated = runner._attack(ood.pixels, lambda part: runner.feature_loss(tiny_model, split, targets[part]), 8.0,
                                 config, tiny_model.device)
    after = (runner._encode(tiny_model, split, manipulated, 8, tiny_model.device) * targets).sum(-1)
    assert bool((after > before).all()), (before, after)


def test_saved_images_rescan_to_the_attacked_scores(sets, tiny_model, tmp_path):
    out = tmp_path / "out"
    report = robustness(_config(sets, tmp_path, objectives=["feature"], methods=["mcm", "atd"], out=str(out)),
                        model=tiny_model)
    folder = out / "images" / "feature" / "all" / "eps8"
    for method in ("mcm", "atd"):
        scan(ScanConfig(inputs=[str(folder)], classes=CLASSES, method=method, out=str(tmp_path / f"{method}.jsonl"),
                        workers=0, cache_dir=str(tmp_path / "cache"), precision="fp32"), model=tiny_model)
        rows = read_manifest(tmp_path / f"{method}.jsonl")
        assert len(rows) == 8 and all(row.ok for row in rows)
        rescanned = float(np.mean([row.ood_score for row in rows]))
        assert rescanned == pytest.approx(report.row("feature", method, 8.0).mean_ood_score, abs=1e-5)


class _Detached(ScoreMethod):
    """MSP computed on detached features: a score that carries no gradient."""

    name = "detached-msp"

    def __call__(self, batch):
        return fn.msp(batch.logit_scale * (batch.features.detach() @ batch.features.new_ones(batch.features.shape[1],
                                                                                           3) / 10))


def test_a_method_without_a_gradient_is_skipped_for_the_score_attack_only(sets, tiny_model, tmp_path):
    report = robustness(_config(sets, tmp_path, methods=["msp", "detached-msp"], eps=[0.0, 4.0]),
                        model=tiny_model, method_objects={"detached-msp": _Detached()})
    assert "carries no gradient" in report.skipped["score:detached-msp"]
    assert {(r.objective, r.method, r.eps) for r in report.rows} >= {("feature", "detached-msp", 4.0),
                                                                    ("score", "msp", 4.0)}


def test_bad_options_are_refused_with_the_fix(sets, tmp_path, tiny_model):
    for kw, message in (({"eps": [-1.0]}, "budgets in 8-bit levels"), ({"objectives": ["pixels"]}, "--objective"),
                        ({"steps": 0}, "--steps"), ({"id_recall": 1.0}, "--id-recall"), ({"eps": [2.0, 2.0]}, "twice")):
        with pytest.raises(InputError, match=message):
            robustness(_config(sets, tmp_path, **kw), model=tiny_model)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "robustness.json").write_text("{}")
    with pytest.raises(InputError, match="--overwrite"):
        robustness(_config(sets, tmp_path, out=str(tmp_path / "out")), model=tiny_model)


@pytest.mark.slow
def test_cli_prints_a_rich_table_per_objective(sets, tmp_path):
    """The results were printed only as raw Markdown; a table per objective now, the numbers of robustness.json."""
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    result = CliRunner().invoke(cli, ["robustness", "--model", "test-tiny", "--classes", str(classes), "--id", sets[0],
                                      "--ood", sets[1], "--methods", "msp,atd", "--eps", "0,4", "--steps", "3",
                                      "--limit", "4", "--out", str(tmp_path / "out"), "--cache-dir",
                                      str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "| score | atd |" not in result.output
    written = json.loads((tmp_path / "out" / "robustness.json").read_text())["robustness"]
    lines = result.output.splitlines()
    for objective in ("feature", "score"):
        start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{objective} attack on 4 OOD"))
        for row in (r for r in written["rows"] if r["objective"] == objective):
            line = next(line for line in lines[start:] if re.match(rf"\W*{row['method']}\W+{row['eps']:g}\W", line))
            assert f"{100 * row['auroc']:.2f}" in line and f"{100 * row['fpr95']:.2f}" in line


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_the_results(sets, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    result = CliRunner().invoke(cli, ["robustness", "--model", "test-tiny", "--classes", str(classes), "--id", sets[0],
                                      "--ood", sets[1], "--methods", "msp,atd", "--eps", "0,4", "--steps", "3",
                                      "--limit", "4", "--out", str(tmp_path / "out"), "--cache-dir",
                                      str(tmp_path / "cache"), "--markdown"])
    assert result.exit_code == 0, result.output
    assert "| score | atd | 4 |" in result.output and "| feature | msp | 0 |" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "auroc_vs_eps_feature.png", "auroc_vs_eps_score.png", "images", "images.jsonl", "robustness.json"]


def test_eval_with_attack_eps_adds_a_robustness_section_to_results_json(sets, tiny_model, tmp_path, shared_data):
    out = tmp_path / "results.json"
    dtd = str(shared_data / "textures-dtd" / "images" / "braided" / "*")
    report = evaluate(EvalConfig(model="test-tiny", classes=CLASSES, id=sets[0], ood=[sets[1], dtd],
                                 methods=["mcm", "atd"], cache_dir=str(tmp_path / "cache"), plots=False, batch_size=8,
                                 attack_eps=[0.0, 4.0], attack_steps=3, out=str(out)), model=tiny_model)
    written = json.loads(out.read_text())["robustness"]
    assert set(written) == set(report.sets) and len(written) == 2
    for set_name, section in written.items():
        assert {(r["objective"], r["method"], r["eps"]) for r in section["rows"]} == {
            ("feature", m, e) for m in ("mcm", "atd") for e in (0.0, 4.0)}
        for row in section["rows"]:
            if row["eps"] == 0:  # the clean images: eval's own numbers
                assert row["auroc"] == pytest.approx(report.results[row["method"]][set_name]["auroc"], abs=1e-12)


def test_budgets_steps_and_outputs_that_would_mislead_or_overwrite_are_refused(sets, tmp_path, tiny_model,
                                                                              shared_data):
    for kw, message in (({"eps": [0.5]}, "whole 8-bit levels"), ({"step_size": -2.0}, "--step-size")):
        with pytest.raises(InputError, match=message):
            robustness(_config(sets, tmp_path, **kw), model=tiny_model)
    user = tmp_path / "user"
    user.mkdir()
    (user / "images.jsonl").write_text("the user's own file\n")
    with pytest.raises(InputError, match=r"already holds images\.jsonl"):
        robustness(_config(sets, tmp_path, out=str(user)), model=tiny_model)
    inside = shared_data / "textures-dtd" / "images" / "banded" / "out"
    with pytest.raises(InputError, match="inside the image set"):
        robustness(_config(sets, tmp_path, out=str(inside)), model=tiny_model)
    assert not inside.exists() and (user / "images.jsonl").read_text() == "the user's own file\n"
    with pytest.raises(InputError, match="--attack-eps"):  # refused before eval scores anything
        evaluate(EvalConfig(model="test-tiny", classes=CLASSES, id=sets[0], ood=[sets[1]], attack_eps=[0.0, 300.0],
                            cache_dir=str(tmp_path / "cache"), plots=False), model=tiny_model)
