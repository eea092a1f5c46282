"""The report as a review tool, driven in a real headless Chromium: slider, class filter, sorting, marks, export."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest
from review_browser import card_of, export_review, find_chromium, mark, report_page

from oodfilter.sinks.manifest import read_manifest


def _counts(page) -> tuple[int, int]:
    return int(page.inner_text("#count-flagged")), int(page.inner_text("#count-kept"))


def _click_slider_at(page, fraction: float) -> float:
    box = page.locator("#threshold").bounding_box()
    page.mouse.click(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)
    return page.evaluate("window.oodReview.threshold")


@pytest.mark.slow
def test_review_in_a_browser_slider_filter_sort_marks_and_export(reviewed_scan, tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium found (Debian package 'chromium'; .ci/run installs it)")
    manifest, report = reviewed_scan
    ok = [row for row in read_manifest(manifest) if row.ok]
    by_name = {Path(row.path).name: row for row in ok}
    assert len(by_name) == len(ok) == 24

    def expected(threshold, rows=ok):
        flagged = sum(row.score > threshold for row in rows)
        return flagged, len(rows) - flagged

    with report_page(report, browser) as page:
        # before the slider moves: the scan's own decisions
        assert _counts(page) == (sum(r.is_ood is True for r in ok), sum(r.is_ood is False for r in ok))
        seen = set()
        for fraction in (0.05, 0.5, 0.97):  # move the slider by clicking its track
            threshold = _click_slider_at(page, fraction)
            assert threshold is not None
            assert _counts(page) == expected(threshold), threshold
            seen.add(_counts(page))
        page.focus("#threshold")
        for _ in range(5):
            page.keyboard.press("ArrowLeft")  # and by keys
        threshold = page.evaluate("window.oodReview.threshold")
        assert _counts(page) == expected(threshold)
        assert len(seen | {_counts(page)}) >= 2  # the counts changed as the slider moved
        for card in page.locator("#grid .card").all():  # every thumbnail relabelled at the slider's threshold
            row = by_name[card.locator(".name").inner_text()]
            assert card.locator(".verdict").inner_text() == ("OOD" if row.score > threshold else "ID")

        # the class filter: only that class's thumbnails, and its own counts
        classes = Counter(row.top_class for row in ok)
        assert len(classes) >= 2, classes  # else the filter below would hide nothing
        name = min(classes, key=lambda c: (classes[c], c))
        page.select_option("#class-filter", name)
        visible = [by_name[c.inner_text()] for c in page.locator("#grid .card:visible .name").all()]
        assert len(visible) == classes[name] and {row.top_class for row in visible} == {name}
        mine = [row for row in ok if row.top_class == name]
        assert (int(page.inner_text("#class-flagged")), int(page.inner_text("#class-kept"))) == expected(
            threshold, mine)
        assert _counts(page) == expected(threshold)  # the totals stay those of the whole scan
        page.select_option("#class-filter", "")
        assert page.locator("#grid .card:visible").count() == 24

        # sorting the grid
        def grid_order():
            return [by_name[n] for n in page.locator("#grid .card .name").all_inner_texts()]

        page.select_option("#sort", "score-asc")
        assert [r.score for r in grid_order()] == sorted(r.score for r in ok)
        page.select_option("#sort", "name")
        assert [Path(r.path).name for r in grid_order()] == sorted(by_name)
        page.select_option("#sort", "score-desc")
        assert [r.score for r in grid_order()] == sorted((r.score for r in ok), reverse=True)

        # two marks: one by its button, one by key over the focused thumbnail
        order = grid_order()
        kept_name, dropped_name = Path(order[0].path).name, Path(order[-1].path).name
        mark(page, kept_name, "keep")
        card_of(page, dropped_name).focus()
        page.keyboard.press("d")
        assert page.inner_text("#mark-count") == "2"
        assert "mark-drop" in (card_of(page, dropped_name).get_attribute("class") or "")

        review = export_review(page, tmp_path / "review.json")
        assert review == {
            "format": "oodfilter-review/1",
            "manifest": os.path.abspath(manifest),
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
            "threshold": threshold,
            "marks": {by_name[kept_name].path: "keep", by_name[dropped_name].path: "drop"},
        }

        # back to the scan's decisions: the exported threshold is null again; a mark clicked twice is removed
        page.click("#threshold-reset")
        mark(page, kept_name, "keep")
        assert _counts(page) == (sum(r.is_ood is True for r in ok), sum(r.is_ood is False for r in ok))
        review = export_review(page, tmp_path / "review2.json")
        assert review["threshold"] is None and review["marks"] == {by_name[dropped_name].path: "drop"}
        assert page.problems == []
