"""The one row type: built from scores, carried through Ray columns, validated when read back."""

from __future__ import annotations

import math

import pytest
import torch

from oodfilter.errors import InputError
from oodfilter.scoring.result import ScoreResult
from oodfilter.sinks.row_columns import rows_from_columns, rows_to_columns
from oodfilter.sinks.rows import ManifestRow, build_rows, row_from_record


def _result(scores, decisions=None):
    n = len(scores)
    return ScoreResult(method="atd", ood_score=torch.tensor(scores), is_ood=decisions, top_class=torch.zeros(n).long(),
                       top_prob=torch.full((n,), 0.5), class_names=["cat"])


def test_rows_follow_input_order_with_errors_in_place():
    rows = build_rows(["a", "b", "c"], [(1, "broken")], [0, 2], _result([0.1, 0.7], torch.tensor([False, True])))
    assert [(r.path, r.status, r.is_ood) for r in rows] == [("a", "ok", False), ("b", "error", None), ("c", "ok", True)]
    assert rows[1].error == "broken" and rows[0].top_class == "cat"


def test_a_non_finite_score_is_an_error_row_naming_the_method():
    rows = build_rows(["a", "b"], [], [0, 1], _result([float("nan"), 0.2]))
    assert rows[0].status == "error" and "atd score is nan" in rows[0].error and rows[0].ood_score is None
    assert rows[1].status == "ok" and rows[1].is_ood is None


def test_columns_round_trip_every_kind_of_row():
    rows = [ManifestRow("a", "ok", ood_score=0.3, is_ood=True, top_class="cat", top_prob=0.8),
            ManifestRow("b", "ok", ood_score=0.1, is_ood=None, top_class="dog", top_prob=0.6),
            ManifestRow("c", "error", error="not an image")]
    columns = rows_to_columns(rows)
    assert columns["ood_score"].dtype.kind == "f" and math.isnan(columns["ood_score"][2])
    assert rows_from_columns(columns) == rows


def test_columns_round_trip_the_label_check():
    rows = [ManifestRow("a", "ok", ood_score=0.3, is_ood=True, top_class="cat", top_prob=0.8, folder_class="dog",
                        label_issue=True),
            ManifestRow("b", "ok", ood_score=0.1, is_ood=False, top_class="dog", top_prob=0.6, folder_class="dog",
                        label_issue=False),
            ManifestRow("c", "error", error="not an image", folder_class="dog")]
    assert rows_from_columns(rows_to_columns(rows)) == rows


@pytest.mark.parametrize(("record", "message"), [
    ({"path": "a"}, "missing column"),
    ({"path": "a", "status": "ok", "error": None, "ood_score": "0.5", "is_ood": True, "top_class": "c",
      "top_prob": 0.5}, "column 'ood_score'"),
    ({"path": "a", "status": "ok", "error": None, "ood_score": 0.5, "is_ood": "True", "top_class": "c",
      "top_prob": 0.5}, "column 'is_ood'"),
    ({"path": "a", "status": "maybe", "error": None, "ood_score": 0.5, "is_ood": True, "top_class": "c",
      "top_prob": 0.5}, "column 'status'"),
    ({"path": "a", "status": "ok", "error": None, "ood_score": float("nan"), "is_ood": True, "top_class": "c",
      "top_prob": 0.5}, "not a finite number"),
    ({"path": "a", "status": "ok", "error": None, "ood_score": None, "is_ood": None, "top_class": None,
      "top_prob": None}, "needs 'ood_score'"),
    ({"path": "a", "status": "ok", "error": None, "ood_score": 10**400, "is_ood": True, "top_class": "c",
      "top_prob": 0.5}, "column 'ood_score' is not a finite number"),  # too large for a float
])
def test_bad_records_are_refused_naming_the_place_and_column(record, message):
    with pytest.raises(InputError, match=message) as raised:
        row_from_record(record, "scan.jsonl line 7")
    assert "scan.jsonl line 7" in str(raised.value)
