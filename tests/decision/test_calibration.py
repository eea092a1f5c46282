"""Calibrated thresholds on hand-built scores: the conformal quantile, ties, R = 1, small sets, the file."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from oodfilter.decision import Calibration, keep_fraction_decisions, minimum_calibration_images, recall_threshold
from oodfilter.errors import InputError

IDENTITY = {"fingerprints": {"image": "i", "yes": "y", "no": "n"}, "classes_sha256": "c", "templates": ["a {}"]}


def test_threshold_is_the_conformal_quantile():
    scores = torch.arange(1, 101, dtype=torch.float64)  # 1..100, N = 100
    # ceil(101 * 0.9) = 91: the 91st smallest score; 91 of 100 kept.
    assert recall_threshold(scores, 0.9) == 91.0
    assert recall_threshold(scores.flip(0), 0.9) == 91.0  # order does not matter
    assert recall_threshold(scores, 0.5) == 51.0


def test_recall_on_new_images_is_at_least_r_on_average():
    generator = torch.Generator().manual_seed(0)
    recalls = []
    for _ in range(400):
        calibration, fresh = torch.randn(50, generator=generator), torch.randn(2000, generator=generator)
        recalls.append(float((fresh <= recall_threshold(calibration, 0.9)).double().mean()))
    mean = sum(recalls) / len(recalls)
    assert 0.9 <= mean <= 0.9 + 2 / 51  # conformal: R <= E[recall] <= R + 1/(N+1), plus sampling slack


def test_ties_keep_every_tied_score():
    scores = torch.tensor([0.1] * 30 + [0.9] * 10, dtype=torch.float64)
    calibration = Calibration.fit(scores, 0.5, method="mcm", identity=IDENTITY)
    assert calibration.threshold == pytest.approx(0.1)
    assert calibration.kept == pytest.approx(0.75)  # all 30 tied scores are kept, so more than R
    assert calibration.is_ood(torch.tensor([0.1, 0.10001])).tolist() == [False, True]


def test_recall_one_keeps_every_calibration_image():
    scores = torch.linspace(-3, 7, 25, dtype=torch.float64)
    assert recall_threshold(scores, 1.0) == 7.0
    assert Calibration.fit(scores, 1.0, method="msp", identity=IDENTITY).kept == 1.0


@pytest.mark.parametrize("recall, needed", [(0.5, 20), (0.9, 20), (0.95, 20), (0.99, 99), (0.999, 999), (1.0, 20)])
def test_minimum_size_is_where_the_quantile_exists(recall, needed):
    assert minimum_calibration_images(recall) == needed
    with pytest.raises(InputError, match=rf"at least {needed} images .* got {needed - 1}"):
        recall_threshold(torch.zeros(needed - 1), recall)
    recall_threshold(torch.zeros(needed), recall)
    if recall < 1:  # the rank asked for fits inside the set exactly from this size on
        assert math.ceil((needed + 1) * recall - 1e-9) <= needed


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, float("nan")])
def test_recall_outside_zero_one_is_refused(bad):
    with pytest.raises(InputError, match=r"must be in \(0, 1\]"):
        recall_threshold(torch.zeros(50), bad)


def test_non_finite_scores_are_refused():
    scores = torch.zeros(30)
    scores[3] = float("nan")
    with pytest.raises(InputError, match="not finite"):
        recall_threshold(scores, 0.9)


def test_saved_calibration_round_trips_and_is_checked(tmp_path):
    calibration = Calibration.fit(torch.linspace(0, 1, 40), 0.9, method="atd", identity=IDENTITY, source="ids/")
    path = calibration.save(tmp_path / "cal.json")
    loaded = Calibration.load(path)
    assert loaded == calibration
    assert loaded.threshold_at(0.9) == calibration.threshold
    assert loaded.threshold_at(0.5) < calibration.threshold
    data = json.loads(path.read_text())
    for key, value, message in [("threshold", "high", "'threshold' holds"), ("format", "other", "not an oodfilter"),
                                ("scores", [0.1, None], "finite numbers"), ("id_recall", 2.0, r"\(0, 1\]")]:
        path.write_text(json.dumps({**data, key: value}))
        with pytest.raises(InputError, match=message):
            Calibration.load(path)
    del data["method"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="missing key 'method'"):
        Calibration.load(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        Calibration.load(path)


def test_a_calibration_is_refused_for_other_scores():
    calibration = Calibration.fit(torch.linspace(0, 1, 40), 0.9, method="atd", identity=IDENTITY)
    calibration.check_fits("atd", IDENTITY)
    with pytest.raises(InputError, match=r"different method \(atd, not mcm\)"):
        calibration.check_fits("mcm", IDENTITY)
    other_model = {**IDENTITY, "fingerprints": {"image": "other", "yes": "y", "no": "n"}}
    with pytest.raises(InputError, match="different model"):
        calibration.check_fits("atd", other_model)
    with pytest.raises(InputError, match="different class list, templates"):
        calibration.check_fits("atd", {**IDENTITY, "classes_sha256": "d", "templates": ["b {}"]})


def test_keep_fraction_keeps_an_exact_count_with_ties_by_position():
    scores = torch.tensor([0.5, 0.1, 0.5, 0.9, 0.5, 0.2])
    is_ood, boundary = keep_fraction_decisions(scores, 0.5)  # keep 3: 0.1, 0.2 and the first 0.5
    assert is_ood.tolist() == [False, False, True, True, True, False]
    assert boundary == 0.5
    assert int((~keep_fraction_decisions(scores, 1.0)[0]).sum()) == 6
    assert keep_fraction_decisions(torch.tensor([0.3]), 0.2) == (torch.tensor([True]), None)
    with pytest.raises(InputError, match="--keep-fraction"):
        keep_fraction_decisions(scores, 0.0)


def test_library_calibration_decides_in_the_scorer_and_the_loader_filter(tiny_model, cache_dir):
    import oodfilter
    from oodfilter.pipeline.filter import OODFilter

    names = ["tench", "goldfish", "hen"]
    spec = oodfilter.ScorerSpec(model="test-tiny", classes=names, method="mcm", cache_dir=str(cache_dir))
    scorer = oodfilter.build_scorer(spec, model=tiny_model)
    generator = torch.Generator().manual_seed(3)
    features = torch.nn.functional.normalize(torch.randn(200, tiny_model.embed_dim, generator=generator), dim=-1)
    calibration = oodfilter.calibrate(scorer, features[:100], 0.8)
    assert calibration.method == "mcm" and calibration.num_images == 100
    decided = oodfilter.build_scorer(replace(spec, calibration=calibration), model=tiny_model)
    result = decided.score_features(features[100:])
    assert result.is_ood is not None
    assert torch.equal(result.is_ood, result.ood_score > calibration.threshold)
    assert 0.6 < float((~result.is_ood).float().mean()) < 0.95  # about R of fresh images drawn alike are kept

    drop = OODFilter(tiny_model, names, method="mcm", calibration=calibration, mode="drop", cache_dir=cache_dir)
    assert drop.scorer.threshold == calibration.threshold
    with pytest.raises(InputError, match="different method"):
        OODFilter(tiny_model, names, method="energy", calibration=calibration, mode="drop", cache_dir=cache_dir)
    with pytest.raises(InputError, match="different class list"):
        OODFilter(tiny_model, ["tench"], method="mcm", calibration=calibration, mode="drop", cache_dir=cache_dir)
    with pytest.raises(InputError, match="each set the decision"):
        oodfilter.build_scorer(replace(spec, calibration=calibration, threshold=0.1), model=tiny_model)


@pytest.mark.parametrize("change, message", [
    ({"identity": {"fingerprints": ["a"]}}, "identity.fingerprints"),
    ({"identity": {"templates": "a {}"}}, "identity.templates"),
    ({"threshold": 10**400}, "'threshold' is not a finite number"),
    ({"num_images": -5}, "'num_images'"),
    ({"scores": []}, "'num_images'"),
    ({"kept": 1.5}, "'kept'"),
    ({"id_recall": True}, "'id_recall' holds True"),
])
def test_hostile_calibration_files_are_refused_clearly(tmp_path, change, message):
    calibration = Calibration.fit(torch.linspace(0, 1, 40), 0.9, method="atd", identity=IDENTITY)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({**calibration.to_dict(), **change}))
    with pytest.raises(InputError, match=message):
        Calibration.load(path)


def test_calibration_api_inputs_are_checked(tiny_model, cache_dir, tmp_path):
    import numpy as np
    from PIL import Image

    import oodfilter

    spec = oodfilter.ScorerSpec(model="test-tiny", classes=["tench", "hen"], method="mcm", cache_dir=str(cache_dir))
    scorer = oodfilter.build_scorer(spec, model=tiny_model)
    folder = tmp_path / "ids"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    assert oodfilter.calibrate(scorer, folder, 0.9).num_images == 20  # a folder, like --calibrate-on
    with pytest.raises(InputError, match="does not exist"):
        oodfilter.calibrate(scorer, tmp_path / "nothing", 0.9)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image found"):
        oodfilter.calibrate(scorer, tmp_path / "empty", 0.9)
    with pytest.raises(InputError, match="takes a Calibration or the path"):
        oodfilter.build_scorer(replace(spec, calibration={"format": "x"}), model=tiny_model)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        recall_threshold(torch.zeros(30), True)
    with pytest.raises(InputError, match="--keep-fraction"):
        keep_fraction_decisions(torch.zeros(3), "0.5")  # type: ignore[arg-type]


def test_a_calibration_for_another_method_is_not_called_another_model():
    calibration = Calibration.fit(torch.linspace(0, 1, 40), 0.9, method="atd", identity=IDENTITY)
    without_no = {**IDENTITY, "fingerprints": {"image": "i", "yes": "y"}}
    with pytest.raises(InputError, match=r"different method \(atd, not msp\); a threshold"):
        calibration.check_fits("msp", without_no)
