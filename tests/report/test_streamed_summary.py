"""The report's summary is computed in two streamed passes: it must equal the definitions on a list."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from oodfilter.report import write_report
from oodfilter.report.summary import decision_boundary, summarise, summarise_stream
from oodfilter.sinks.rows import ManifestRow


def _rows(count: int, seed: int) -> list[ManifestRow]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        if rng.random() < 0.1:
            rows.append(ManifestRow(f"/d/{i}.jpg", "error", error="broken"))
            continue
        score = rng.choice([0.1, 0.2, 0.5, 0.9]) if rng.random() < 0.5 else rng.random()  # many ties
        rows.append(ManifestRow(f"/d/{i}.jpg", "ok", ood_score=score, is_ood=score > 0.5,
                                top_class=rng.choice("abc"), top_prob=0.5))
    return rows


@pytest.mark.parametrize(("count", "k", "meta"), [(300, 24, {"method": "atd"}), (50, 7, {"threshold": 0.5}),
                                                   (5, 24, {"method": "ctw"}), (40, 0, {})])
def test_streamed_summary_equals_the_sorted_definitions(count, k, meta):
    rows = _rows(count, seed=count)
    ok = [r for r in rows if r.ok]
    by_score = sorted(ok, key=lambda r: r.score)  # stable: ties in manifest order
    boundary = decision_boundary(rows, meta)
    data = summarise_stream(lambda: iter(rows), meta, per_gallery=k)
    flagged = [r for r in by_score if r.is_ood is True]
    kept = [r for r in by_score if r.is_ood is False]
    assert data.most_ood == flagged[::-1][:k]  # among the flagged only (issue 30: not the highest of all rows)
    assert data.near_flagged == flagged[:k]
    assert data.near_kept == kept[::-1][:k]
    assert data.most_id == kept[:k]  # among the kept only
    if "threshold" in meta:  # with a threshold the two strips hold the k rows nearest it (equal distances aside)
        def distance(row):
            return abs(row.score - boundary)
        nearest = sorted(map(distance, ok))[:k]
        assert sorted(map(distance, data.near_flagged + data.near_kept))[:k] == nearest
    assert list(data.scores) == [r.score for r in ok]
    assert data.counts == {"total": count, "ok": len(ok), "errors": count - len(ok),
                           "ood": sum(r.is_ood is True for r in ok), "id": sum(r.is_ood is False for r in ok),
                           "undecided": 0}
    for rate in data.per_class:
        mine = [r for r in ok if r.top_class == rate.name]
        assert rate.images == len(mine) and rate.median_score == statistics.median(r.score for r in mine)
    assert summarise(rows, meta, per_gallery=k) == data


def test_the_boundary_without_a_threshold_is_the_midpoint_of_the_decided_extremes():
    rows = [ManifestRow("a", "ok", ood_score=0.2, is_ood=False), ManifestRow("b", "ok", ood_score=0.6, is_ood=True),
            ManifestRow("c", "ok", ood_score=0.4, is_ood=False), ManifestRow("d", "error", error="x")]
    assert decision_boundary(rows, {"method": "atd"}) == pytest.approx(0.5)
    assert decision_boundary(rows, {"threshold": 0.3}) == 0.3 and decision_boundary(rows, {"method": "ctw"}) == 0.5
    assert decision_boundary(rows[:1], {}) is None


def test_the_report_lists_the_first_errors_and_counts_them_all(tmp_path, monkeypatch):
    monkeypatch.setattr("oodfilter.report.summary.MAX_ERRORS_SHOWN", 3)
    manifest = tmp_path / "m.jsonl"
    rows = [ManifestRow(f"/gone/{i}.jpg", "error", error=f"reason {i}") for i in range(5)]
    rows.append(ManifestRow("/gone/ok.jpg", "ok", ood_score=0.3, is_ood=False, top_class="a", top_prob=0.9))
    manifest.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    page = write_report(manifest, tmp_path / "r.html").read_text()
    assert "Errors (5)" in page and "The first 3 are listed" in page
    assert "reason 2" in page and "reason 3" not in page
