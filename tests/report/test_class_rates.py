"""Per-class rates in the report and the scan summary, and the calibrated what-if table."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from oodfilter.cli.main import cli
from oodfilter.decision import Calibration
from oodfilter.report import ReportConfig, write_report
from oodfilter.report.class_rates import class_rates, suspicious_classes, suspicious_note
from oodfilter.report.summary import summarise
from oodfilter.report.what_if import what_if
from oodfilter.sinks.manifest import ManifestWriter, sidecar
from oodfilter.sinks.rows import ManifestRow


def _rows(name: str, scores: list[float], flagged: int) -> list[ManifestRow]:
    return [ManifestRow(f"{name}{i}.jpg", "ok", ood_score=s, is_ood=i < flagged, top_class=name, top_prob=0.5)
            for i, s in enumerate(scores)]


def _scan_rows() -> list[ManifestRow]:
    # "cat": 10 images, 1 flagged; "dog": 8, 1 flagged; "tench": 6, 5 flagged (a class missing from the list
    # lands on it); one undecided row and one error row.
    return (_rows("cat", [0.1 * i for i in range(10)], 1) + _rows("dog", [0.2, 0.4, 0.6, 0.8] * 2, 1)
            + _rows("tench", [0.9, 0.8, 0.95, 0.85, 0.7, 0.2], 5)
            + [ManifestRow("u.jpg", "ok", ood_score=0.5, top_class="cat", top_prob=0.4),
               ManifestRow("bad.jpg", "error", error="truncated")])


def test_rates_count_share_and_median_per_top_class():
    rates = {rate.name: rate for rate in class_rates(_scan_rows())}
    assert [r.name for r in class_rates(_scan_rows())] == ["cat", "dog", "tench"]  # most images first
    cat = rates["cat"]
    assert (cat.images, cat.flagged, cat.decided) == (11, 1, 10)  # the undecided row counts as an image only
    assert cat.share == pytest.approx(0.1) and cat.median_score == pytest.approx(0.5)
    assert rates["dog"].median_score == pytest.approx(0.5) and rates["tench"].share == pytest.approx(5 / 6)


def test_a_class_with_a_standout_flagged_share_is_pointed_out():
    rates = class_rates(_scan_rows())
    assert [rate.name for rate in suspicious_classes(rates)] == ["tench"]
    assert "'tench' (5/6 flagged)" in (suspicious_note(rates) or "")
    even = class_rates(_rows("a", [0.5] * 10, 6) + _rows("b", [0.5] * 10, 6))  # high everywhere: nothing stands out
    assert suspicious_classes(even) == [] and suspicious_note(even) is None
    few = class_rates(_rows("a", [0.1] * 20, 0) + _rows("b", [0.9] * 4, 4))  # too few images to say
    assert suspicious_classes(few) == []


def test_what_if_counts_from_the_stored_calibration_scores():
    identity = {"fingerprints": {}, "classes_sha256": "x", "templates": []}
    calibration = Calibration.fit(torch.arange(100, dtype=torch.float64), 0.9, method="mcm", identity=identity)
    scan_scores = [float(s) for s in range(0, 200, 2)]  # 0, 2, ..., 198
    rows = {w.id_recall: w for w in what_if(calibration, scan_scores)}
    # thresholds: the ceil(101 R)-th smallest of 0..99, i.e. the 91st, 96th and 100th: 90, 95, 99
    assert [rows[r].threshold for r in (0.90, 0.95, 0.99)] == [90.0, 95.0, 99.0]
    assert [rows[r].kept for r in (0.90, 0.95, 0.99)] == [46, 48, 50]
    assert all(rows[r].kept + rows[r].flagged == 100 for r in rows)
    small = Calibration.fit(torch.arange(30, dtype=torch.float64), 0.9, method="mcm", identity=identity)
    assert what_if(small, scan_scores)[2].threshold is None and "at least 99" in what_if(small, scan_scores)[2].note


def test_report_shows_rates_warning_and_what_if(tmp_path):
    manifest = tmp_path / "scan.jsonl"
    writer = ManifestWriter(manifest, append=False)
    writer.write(_scan_rows())
    writer.close()
    sidecar(manifest, "meta.json").write_text('{"method": "mcm", "threshold": 0.65}')
    page = write_report(manifest, tmp_path / "r.html", ReportConfig(per_gallery=2)).read_text()
    assert "Check: &#x27;tench&#x27; (5/6 flagged)" in page
    assert re.search(r"<td>tench</td><td>6</td><td>5</td><td>83%</td><td>0.825</td>", page)
    assert "--id-recall R --calibrate-on" in page  # no calibration: how to get the what-if table

    identity = {"fingerprints": {}, "classes_sha256": "x", "templates": []}
    fitted = Calibration.fit(torch.linspace(0, 1, 200, dtype=torch.float64), 0.95, method="mcm", identity=identity,
                             source="200 images from ids/")
    fitted.save(sidecar(manifest, "calibration.json"))
    page = write_report(manifest, tmp_path / "r.html", ReportConfig(per_gallery=2), overwrite=True).read_text()
    assert "What if: other ID recalls" not in page  # the meta says the scan was not calibrated: a stale file
    sidecar(manifest, "meta.json").write_text(json.dumps({"method": "mcm", "threshold": fitted.threshold,
                                                          "calibration": {"id_recall": 0.95}}))
    page = write_report(manifest, tmp_path / "r.html", ReportConfig(per_gallery=2), overwrite=True).read_text()
    assert "threshold for ID recall 95% (200 ID images)" in page
    assert "What if: other ID recalls" in page and "<td>99%</td>" in page
    data = summarise(_scan_rows(), {"threshold": 0.65})
    assert [r.name for r in data.per_class] == ["cat", "dog", "tench"]


def test_scan_summary_prints_the_per_class_table(tmp_path, tiny_model, awkward_images):
    folder = tmp_path / "imgs"
    shutil.copytree(awkward_images[0], folder, symlinks=True)
    classes = tmp_path / "c.txt"
    classes.write_text("tench\ngoldfish\n")
    result = CliRunner().invoke(cli, ["scan", str(folder), "--model", "test-tiny", "--classes", str(classes),
                                      "--out", str(tmp_path / "s.jsonl"), "--workers", "0",
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "per top class" in result.output and "median score" in result.output
    assert re.search(r"(tench|goldfish)\s*│\s*\d+\s*│\s*\d+\s*│\s*\d+%", result.output), result.output
