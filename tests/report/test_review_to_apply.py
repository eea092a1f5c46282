"""End to end: marks made in the report page in a real browser, exported, applied by ``oodfilter apply``, undone.

Issue 30's "done means": the export applied by ``oodfilter apply`` moves exactly the marked files and
``oodfilter undo`` restores them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from review_browser import export_review, find_chromium, mark, report_page

from oodfilter.cli.main import cli
from oodfilter.sinks.manifest import read_manifest


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_marks_exported_from_the_page_are_applied_moving_exactly_those_files_and_undo_restores_them(
        reviewed_scan, tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium found (Debian package 'chromium'; .ci/run installs it)")
    manifest, report = reviewed_scan
    images = tmp_path / "images"
    before = _tree(images)
    ok = sorted((row for row in read_manifest(manifest) if row.ok), key=lambda row: row.score)
    # drop two the scan kept or scored lowest, keep one it scored highest: marks that disagree with the scores
    dropped, kept = [Path(ok[0].path), Path(ok[1].path)], Path(ok[-1].path)
    with report_page(report, browser) as page:
        for path in dropped:
            mark(page, path.name, "drop")
        mark(page, kept.name, "keep")
        review = export_review(page, tmp_path / "review.json")
        assert page.problems == []
    assert set(review["marks"]) == {str(p) for p in [*dropped, kept]}

    rejected = tmp_path / "rejected"
    result = CliRunner().invoke(cli, ["apply", str(manifest), "--review", str(tmp_path / "review.json"),
                                      "--only-marked", "--action", "move", "--dest", str(rejected)])
    assert result.exit_code == 0, result.output
    after = _tree(images)
    moved = set(before) - set(after)
    assert moved == {str(p.relative_to(images)) for p in dropped}  # exactly the two "drop" marks
    assert all(after[name] == before[name] for name in after)  # nothing else touched
    assert {p.name for p in rejected.rglob("*") if p.is_file()} == {p.name for p in dropped}

    journal = next(tmp_path.glob("scan.applied.jsonl.journal.jsonl"))
    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == 0, result.output
    assert _tree(images) == before  # every file back, byte for byte
    assert not [p for p in rejected.rglob("*") if p.is_file()]
