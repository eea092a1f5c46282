"""The scan-like mixtures of the dataset-aware benchmark: honest shares, disjoint halves, fixed per seed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.world.mixtures import ood_count, scan_metrics, scenarios, split_id


def test_the_calibration_half_is_never_scanned_and_the_split_is_fixed_per_seed() -> None:
    split = split_id(1000, seed=0)
    assert len(split.calibration) == len(split.scan) == 500
    assert not set(split.calibration) & set(split.scan)
    assert sorted([*split.calibration, *split.scan]) == list(range(1000))
    assert np.array_equal(split_id(1000, seed=0).scan, split.scan)
    assert not np.array_equal(split_id(1000, seed=1).scan, split.scan)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_a_mixture_holds_the_ood_share_it_is_named_for(fraction: float) -> None:
    count = ood_count(500, fraction)
    assert abs(count / (500 + count) - fraction) < 0.002


def test_mixtures_are_distinct_images_of_their_set_drawn_the_same_way_for_a_seed() -> None:
    scans = {s.name: s for s in scenarios(500, {"near": 1000, "dtd": 1200}, seed=2)}
    assert list(scans) == ["near", "near 10%", "near 30%", "near 50%", "dtd", "dtd 10%", "dtd 30%", "dtd 50%"]
    assert len(scans["near"].ood_index) == 1000 and len(scans["dtd"].ood_index) == 1200
    assert [len(scans[f"dtd {p}%"].ood_index) for p in (10, 30, 50)] == [56, 214, 500]
    for scan in scans.values():
        assert len(set(scan.ood_index)) == len(scan.ood_index)
        assert scan.ood_index.min() >= 0 and scan.ood_index.max() < (1000 if scan.ood_set == "near" else 1200)
    again = {s.name: s for s in scenarios(500, {"near": 1000, "dtd": 1200}, seed=2)}
    other = {s.name: s for s in scenarios(500, {"near": 1000, "dtd": 1200}, seed=3)}
    assert all(np.array_equal(again[name].ood_index, scans[name].ood_index) for name in scans)
    assert not np.array_equal(other["near 30%"].ood_index, scans["near 30%"].ood_index)


def test_a_mixture_larger_than_its_set_is_refused() -> None:
    with pytest.raises(ValueError, match="500 dtd images needed for 50% OOD; the set has 400"):
        scenarios(500, {"dtd": 400}, seed=0)


def test_scan_figures_count_what_the_threshold_catches_and_keeps() -> None:
    id_scores = np.array([0.1, 0.2, 0.3, 0.9])
    ood_scores = np.array([0.25, 0.8, 0.95])
    figures = scan_metrics(id_scores, ood_scores, threshold=0.5)
    assert figures["caught"] == pytest.approx(2 / 3) and figures["id_kept"] == pytest.approx(3 / 4)
    assert figures["auroc"] == pytest.approx(9 / 12)  # 9 of the 12 (ID, OOD) pairs ranked right
    # keeping 95% of 4 ID images keeps all 4 (threshold 0.9), which keeps the OOD images at 0.25 and 0.8
    assert figures["fpr95"] == pytest.approx(2 / 3)
