"""Warnings about decision rules and class-list lengths, quoting the benchmark world's measurements."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from oodfilter.decision.advice import MEASURED_RULES, decision_advice
from oodfilter.scan import ScanConfig, scan


def test_short_lists_get_the_measured_consequence_and_the_remedy():
    (message,) = decision_advice("atd", 3, rule_decides=True)
    kept, caught = MEASURED_RULES["atd"][3]
    assert f"kept {kept:.0%} of in-distribution images and caught {caught:.0%} of near-OOD" in message
    assert "--id-recall 0.95 --calibrate-on" in message
    assert "with 4 class(es)" in decision_advice("ctw", 4, rule_decides=True)[0]
    assert "world with 3 class(es)" in decision_advice("ctw", 4, rule_decides=True)[0]  # nearest measured size
    assert decision_advice("atd", 20, rule_decides=True) == []
    assert decision_advice("atd", 3, rule_decides=False) == []  # a threshold or calibration decides instead
    assert decision_advice("energy", 2, rule_decides=False) == []


def test_ctw_with_a_long_list_and_softmax_scores_with_one_class_are_flagged():
    (message,) = decision_advice("ctw", 120, rule_decides=True)
    assert "caught 0.3% of near-OOD" in message and "use atd" in message
    assert any("same score" in m for m in decision_advice("mcm", 1, rule_decides=False))
    assert any("same score" in m for m in decision_advice("msp", 1, rule_decides=False))
    assert not any("same score" in m for m in decision_advice("energy", 1, rule_decides=False))


def test_the_scan_warns_only_when_the_rule_decides(tmp_path, tiny_model):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    config = ScanConfig(inputs=[str(folder)], classes=["tench", "goldfish"], out=str(tmp_path / "a.jsonl"),
                        cache_dir=str(tmp_path / "cache"), workers=0)
    with pytest.warns(UserWarning, match="threshold-free rule decides with an ID recall you did not choose"):
        scan(config, model=tiny_model)
    config.out, config.threshold = str(tmp_path / "b.jsonl"), 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        scan(config, model=tiny_model)
