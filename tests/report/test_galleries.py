"""Which rows each gallery of the report shows (issue 30: the galleries followed scores, not the scan's decisions)."""

from __future__ import annotations

import json

import pytest

from oodfilter.report import ReportConfig, write_report
from oodfilter.report.review_page import json_island, read_island
from oodfilter.report.summary import summarise
from oodfilter.sinks.rows import ManifestRow


def _row(name: str, score: float, is_ood: bool | None, top_class: str = "a") -> ManifestRow:
    return ManifestRow(f"/d/{name}.jpg", "ok", ood_score=score, is_ood=is_ood, top_class=top_class, top_prob=0.5)


def _names(rows: list[ManifestRow]) -> list[str]:
    return [row.path[3:-4] for row in rows]


def test_a_small_scan_shows_only_flagged_images_as_most_ood_and_only_kept_ones_as_most_id():
    rows = [_row(f"kept{i}", 0.1 * i, False) for i in range(5)] + [_row(f"ood{i}", 0.7 + 0.1 * i, True)
                                                                   for i in range(3)]
    data = summarise(rows, {"threshold": 0.65}, per_gallery=24)
    assert _names(data.most_ood) == ["ood2", "ood1", "ood0"]  # was every row, the kept ones included
    assert _names(data.most_id) == ["kept0", "kept1", "kept2", "kept3", "kept4"]  # was every row, flagged ones too


def test_per_image_rules_overlap_and_each_gallery_keeps_to_its_decision():
    # ATD decides per image: a kept image can score above a flagged one
    rows = [_row("kept-high", 0.95, False), _row("ood-top", 0.99, True), _row("ood-low", 0.05, True),
            _row("kept-low", 0.1, False), _row("kept-mid", 0.2, False), _row("ood-mid", 0.9, True)]
    data = summarise(rows, {"method": "atd"}, per_gallery=2)
    assert _names(data.most_ood) == ["ood-top", "ood-mid"]  # not kept-high, which scored 0.95
    assert _names(data.most_id) == ["kept-low", "kept-mid"]  # not ood-low, which scored 0.05
    assert _names(data.near_flagged) == ["ood-low", "ood-mid"]  # flagged, scored lowest first
    assert _names(data.near_kept) == ["kept-high", "kept-mid"]  # kept, scored highest first


@pytest.mark.parametrize("meta", [{"threshold": 0.5}, {"keep_fraction": 0.5, "keep_boundary": 0.5},
                                  {"method": "ctw"}])
def test_the_boundary_strips_are_the_rows_nearest_the_boundary_on_each_side(meta):
    scores = [0.02, 0.3, 0.45, 0.5, 0.52, 0.7, 0.99, 0.97, 0.01, 0.49]
    rows = [_row(f"s{score}", score, score > 0.5) for score in scores]
    data = summarise(rows, meta, per_gallery=2)
    assert data.boundary == 0.5
    assert _names(data.near_flagged) == ["s0.52", "s0.7"]
    assert _names(data.near_kept) == ["s0.5", "s0.49"]
    assert _names(data.most_ood) == ["s0.99", "s0.97"] and _names(data.most_id) == ["s0.01", "s0.02"]


def test_rows_without_a_decision_are_in_no_gallery_and_the_page_says_why(tmp_path):
    rows = [_row(f"u{i}", 0.1 * i, None) for i in range(4)]
    data = summarise(rows, {"method": "msp"}, per_gallery=24, browse=10)
    assert data.most_ood == data.most_id == data.near_flagged == data.near_kept == []
    assert data.browse == rows  # still browsable, and the slider can decide them
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    page = write_report(manifest, tmp_path / "r.html").read_text()
    assert page.count("The scan made no decisions (scores only)") == 4  # each of the four strips says so
    assert 'id="most-ood"' not in page and 'id="grid"' in page


def test_a_scan_that_flagged_nothing_says_so_instead_of_showing_kept_images(tmp_path):
    rows = [_row(f"k{i}", 0.1 * i, False) for i in range(3)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    (tmp_path / "m.jsonl.meta.json").write_text(json.dumps({"threshold": 0.9, "method": "atd"}))
    page = write_report(manifest, tmp_path / "r.html").read_text()
    assert page.count("No image was flagged OOD by the scan.") == 2  # most OOD and just flagged
    assert "Most OOD (0)" in page and "Most in-distribution (3)" in page
    assert "the threshold 0.9" in page


def test_the_grid_shows_every_row_up_to_its_cap_then_every_kth():
    rows = [_row(f"r{i}", i / 10, i > 5) for i in range(10)]
    assert summarise(rows, {}, browse=10).browse == rows
    assert _names(summarise(rows, {}, browse=4).browse) == ["r0", "r2", "r5", "r7"]
    assert summarise(rows, {}, browse=0).browse == []


def test_the_json_island_cannot_be_closed_by_a_file_name(tmp_path):
    evil = "/d/</script><script>alert(1)</script><!--ü\udcff.jpg"
    island = json_island({"path": evil})
    assert island.count("</script>") == 1 and "<!--" not in island
    assert read_island(island) == {"path": evil}  # the exact string (a non-UTF-8 byte's surrogate too) comes back
    rows = [ManifestRow(evil, "ok", ood_score=0.7, is_ood=True, top_class="a", top_prob=0.5)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    page = write_report(manifest, tmp_path / "r.html").read_text()
    assert page.count("</script>") == 2 and "<script>alert(1)" not in page  # the island and the page's script
    assert read_island(page)["rows"][0]["path"] == evil


def test_the_page_says_when_the_grid_is_a_sample_or_off(tmp_path):
    rows = [_row(f"r{i}", i / 10, i > 5) for i in range(10)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    sample = write_report(manifest, tmp_path / "a.html", ReportConfig(grid=4)).read_text()
    assert "Browse (4)" in sample and "Showing 4 of 10 scanned images, spread evenly over the manifest" in sample
    # the strips: 4 flagged (most OOD, just flagged) and 6 kept (just kept, most in-distribution); then the grid
    assert sample.count('<figure class="card"') == 4 + 4 + 6 + 6 + 4
    off = write_report(manifest, tmp_path / "b.html", ReportConfig(grid=0)).read_text()
    assert "Browse (0)" in off and "The grid is off (--grid 0)" in off and 'id="grid"' not in off
    full = write_report(manifest, tmp_path / "c.html").read_text()
    assert "All 10 scanned images." in full
