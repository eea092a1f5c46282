"""Detection metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from oodfilter.errors import InputError
from oodfilter.evaluate.metrics import aupr_in, aupr_out, auroc, average_precision, fpr_at_95_tpr


def test_auroc_hand_cases():
    assert auroc([0, 1], [2, 3]) == 1.0  # every OOD above every ID
    assert auroc([2, 3], [0, 1]) == 0.0
    assert auroc([0, 2], [1, 3]) == 0.75  # pairs: (0<1, 0<3, 2>1, 2<3) → 3 of 4
    assert auroc([1, 1], [1, 1]) == 0.5  # all tied: one half each
    assert auroc([0, 1, 1], [1, 2]) == pytest.approx((0.5 + 1 + 1 + 0.5 + 1 + 1) / 6)


def test_auroc_equals_pairwise_probability():
    rng = np.random.default_rng(0)
    ids, oods = rng.normal(size=50).round(1), rng.normal(0.5, size=40).round(1)  # rounded: many ties
    pairwise = np.mean([(o > i) + 0.5 * (o == i) for o in oods for i in ids])
    assert auroc(ids, oods) == pytest.approx(pairwise)


def test_fpr95_conventions():
    ids = np.arange(100)  # 95% of ID is kept at threshold 94 (scores ≤ 94)
    oods = np.array([10, 50, 94, 95, 200])
    assert fpr_at_95_tpr(ids, oods) == pytest.approx(3 / 5)  # OOD accepted: 10, 50, 94
    # openood: threshold keeps 95% of OOD at or above it (here the lowest of 5 → 10); ID rejected ≥ 10.
    assert fpr_at_95_tpr(ids, oods, convention="openood") == pytest.approx(90 / 100)
    assert fpr_at_95_tpr([0, 0], [1, 1]) == 0.0
    with pytest.raises(InputError, match="unknown FPR95 convention"):
        fpr_at_95_tpr(ids, oods, convention="other")


def test_average_precision_hand_cases():
    assert average_precision([3, 2], [1, 0]) == 1.0
    # ranking: pos 3, neg 2, pos 1 → precision 1 at recall .5, 2/3 at recall 1 → AP = .5 + .5·2/3
    assert average_precision([3, 1], [2]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([1, 1], [1, 1]) == 0.5  # all tied: one threshold, precision 1/2
    assert aupr_out([0, 1], [2, 3]) == 1.0 and aupr_in([0, 1], [2, 3]) == 1.0
    assert aupr_in([2, 3], [0, 1]) == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 4)


@pytest.mark.parametrize("bad", [([], [1.0]), ([1.0], []), ([np.nan], [1.0]), ([1.0], [np.inf])])
def test_degenerate_inputs_are_clear_errors(bad):
    with pytest.raises(InputError):
        auroc(*bad)
