"""Scan decisions from a calibration (--id-recall / --calibration) or a keep fraction, with resume and actions."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from oodfilter.cli.main import cli
from oodfilter.decision import Calibration, recall_threshold
from oodfilter.errors import InputError
from oodfilter.scan import ScanConfig
from oodfilter.sinks.manifest import read_manifest, read_meta, sidecar


def _images(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = rng.integers(0, 255, 3)
        pixels = np.clip(base + rng.normal(0, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return folder


@pytest.fixture
def folders(tmp_path):
    return _images(tmp_path / "calibration", 30, 0), _images(tmp_path / "inputs", 24, 1)


def _scan(tmp_path: Path, *args: object, expect: int = 0):
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\nhen\nostrich\n")
    result = CliRunner().invoke(cli, ["scan", "--model", "test-tiny", "--classes", str(classes), "--cache-dir",
                                      str(tmp_path / "cache"), "--workers", "0", "--quiet", *map(str, args)])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    return result


def test_id_recall_calibrates_the_threshold_on_the_given_images(tmp_path, folders):
    calibration_folder, inputs = folders
    reference = tmp_path / "reference.jsonl"
    _scan(tmp_path, calibration_folder, "--method", "mcm", "--out", reference)
    expected = recall_threshold(torch.tensor([row.score for row in read_manifest(reference)]), 0.9)

    out = tmp_path / "scan.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", calibration_folder, "--out", out)
    meta = read_meta(out)
    assert meta["threshold"] == pytest.approx(expected, abs=1e-6)
    assert meta["calibration"]["id_recall"] == 0.9 and meta["calibration"]["num_images"] == 30
    assert "calibrated to keep 90% of 30" in meta["decision"]
    saved = Calibration.load(sidecar(out, "calibration.json"))
    assert saved.method == "mcm" and saved.kept >= 0.9
    rows = read_manifest(out)
    assert len(rows) == 24 and all(row.is_ood == (row.score > saved.threshold) for row in rows)


def test_resume_reuses_the_calibration_and_refuses_a_changed_one(tmp_path, folders):
    calibration_folder, inputs = folders
    out = tmp_path / "scan.jsonl"
    args = ["--method", "mcm", "--calibrate-on", calibration_folder, "--out", out]
    _scan(tmp_path, inputs, "--id-recall", 0.9, *args)
    stored = sidecar(out, "calibration.json")
    before = stored.stat().st_mtime_ns
    (inputs / "img000.png").rename(tmp_path / "moved.png")  # not scanned yet on the resumed run: one new input
    _scan(tmp_path, inputs, tmp_path / "moved.png", "--id-recall", 0.9, "--resume", *args)
    assert stored.stat().st_mtime_ns == before  # reused, not fitted again
    assert len(read_manifest(out)) == 25

    result = _scan(tmp_path, inputs, "--id-recall", 0.95, "--resume", *args, expect=1)
    assert isinstance(result.exception, InputError) and "different threshold or decision rule" in str(result.exception)
    _images(calibration_folder / "more", 2, 5)  # the calibration set changed
    result = _scan(tmp_path, inputs, "--id-recall", 0.9, "--resume", *args, expect=1)
    assert "different threshold or decision rule" in str(result.exception)


def test_a_saved_calibration_is_used_only_for_the_scores_it_was_fitted_on(tmp_path, folders):
    calibration_folder, inputs = folders
    first = tmp_path / "first.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", calibration_folder, "--out", first)
    saved = sidecar(first, "calibration.json")
    again = tmp_path / "again.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--calibration", saved, "--out", again)
    assert [r.is_ood for r in read_manifest(again)] == [r.is_ood for r in read_manifest(first)]
    result = _scan(tmp_path, inputs, "--method", "energy", "--calibration", saved, "--out", tmp_path / "x.jsonl",
                   expect=1)
    assert "fitted for a different method (mcm, not energy)" in str(result.exception)
    assert not (tmp_path / "x.jsonl").exists()


def test_calibrate_on_a_manifest_uses_its_ok_rows(tmp_path, folders):
    calibration_folder, inputs = folders
    listing = tmp_path / "ids.jsonl"
    _scan(tmp_path, calibration_folder, "--out", listing)
    out = tmp_path / "scan.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", listing, "--out", out)
    assert read_meta(out)["calibration"]["num_images"] == 30


def test_keep_fraction_decides_after_scoring_and_drives_the_action(tmp_path, folders):
    _, inputs = folders
    out, dest = tmp_path / "scan.csv", tmp_path / "flagged"
    # mcm has no threshold-free rule: without a keep fraction, --action copy would be refused
    _scan(tmp_path, inputs, "--method", "mcm", "--keep-fraction", 0.75, "--action", "copy", "--dest", dest,
          "--out", out)
    rows = read_manifest(out)
    kept = [row for row in rows if row.is_ood is False]
    flagged = [row for row in rows if row.is_ood is True]
    assert len(kept) == 18 and len(flagged) == 6
    assert max(row.score for row in kept) <= min(row.score for row in flagged)
    assert sorted(p.name for p in dest.rglob("*.png")) == sorted(Path(row.path).name for row in flagged)
    meta = read_meta(out)
    assert meta["keep_fraction"] == 0.75 and meta["keep_boundary"] == max(row.score for row in kept)
    assert json.loads(sidecar(out, "meta.json").read_text())["decision"].startswith("keep the 75%")


@pytest.mark.parametrize("options, message", [
    ({"id_recall": 0.9}, "needs --calibrate-on"),
    ({"calibrate_on": ["x"]}, "used with --id-recall"),
    ({"threshold": 0.2, "keep_fraction": 0.5}, "--threshold and --keep-fraction each set the decision"),
    ({"id_recall": 1.5, "calibrate_on": ["x"]}, r"--id-recall must be in \(0, 1\]"),
    ({"keep_fraction": 0.0}, r"--keep-fraction must be in \(0, 1\]"),
])
def test_contradicting_or_out_of_range_decision_options_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        ScanConfig(inputs=["a"], classes=["a"], **options).validate()


def test_too_few_calibration_images_is_a_clear_error(tmp_path):
    small = _images(tmp_path / "few", 5, 2)
    result = _scan(tmp_path, small, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", small, "--out",
                   tmp_path / "s.jsonl", expect=1)
    assert "needs at least 20 images known to be in-distribution, got 5" in str(result.exception)


def test_a_resumed_keep_fraction_scan_decides_over_all_its_rows(tmp_path, folders):
    _, inputs = folders
    out = tmp_path / "scan.jsonl"
    _scan(tmp_path, inputs, "--keep-fraction", 0.5, "--include", "img00*", "--out", out)
    assert sum(row.is_ood is False for row in read_manifest(out)) == 5  # 10 inputs so far
    _scan(tmp_path, inputs, "--keep-fraction", 0.5, "--resume", "--out", out)
    rows = read_manifest(out)
    assert len(rows) == 24 and sum(row.is_ood is False for row in rows) == 12
    kept = sorted(row.score for row in rows if row.is_ood is False)
    assert kept == sorted(row.score for row in rows)[:12]
    result = _scan(tmp_path, inputs, "--keep-fraction", 0.6, "--resume", "--out", out, expect=1)
    assert "different threshold or decision rule" in str(result.exception)


def test_a_refused_resume_changes_no_file_and_a_stale_calibration_is_refused(tmp_path, folders):
    calibration_folder, inputs = folders
    out = tmp_path / "scan.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", calibration_folder,
          "--include", "img00*", "--out", out)
    stored = sidecar(out, "calibration.json")
    before = {path: path.read_bytes() for path in (stored, sidecar(out, "meta.json"), out)}
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.5, "--calibrate-on", calibration_folder, "--resume",
          "--out", out, expect=1)
    assert {path: path.read_bytes() for path in before} == before
    fitted = Calibration.load(stored)  # a calibration file replaced behind the scan's back (valid on its own)
    Calibration.fit(torch.tensor(fitted.scores, dtype=torch.float64) + 0.01, fitted.id_recall, method=fitted.method,
                    identity=fitted.identity, source=fitted.source).save(stored)
    result = _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", calibration_folder,
                   "--resume", "--out", out, expect=1)
    assert "no longer holds the threshold its rows were decided with" in str(result.exception)


def test_a_keep_fraction_scan_that_moved_files_refuses_new_inputs_on_resume(tmp_path, folders):
    _, inputs = folders
    out, dest = tmp_path / "scan.jsonl", tmp_path / "flagged"
    args = ["--keep-fraction", 0.75, "--action", "copy", "--dest", dest, "--out", out]
    _scan(tmp_path, inputs, "--include", "img00*", *args)
    result = _scan(tmp_path, inputs, "--resume", *args, expect=1)
    assert "undo them first" in str(result.exception)
    _scan(tmp_path, inputs, "--include", "img00*", "--resume", *args)  # nothing new: same decisions, allowed


def test_parquet_keep_fraction_merges_a_journal_left_by_a_crash(tmp_path, folders):
    pytest.importorskip("pyarrow")
    _, inputs = folders
    out = tmp_path / "scan.parquet"
    _scan(tmp_path, inputs, "--keep-fraction", 0.5, "--out", out)
    rows = read_manifest(out)
    # a crash after the last batch, before the journal became the Parquet file
    sidecar(out, "partial.jsonl").write_text("".join(json.dumps({**r.to_dict(), "is_ood": None}) + "\n" for r in rows))
    out.unlink()
    _scan(tmp_path, inputs, "--keep-fraction", 0.5, "--resume", "--out", out)
    again = read_manifest(out)
    assert len(again) == 24 and sum(r.is_ood is False for r in again) == 12
    assert not sidecar(out, "partial.jsonl").exists()


def test_a_fresh_scan_never_replaces_a_calibration_file_and_the_report_ignores_stale_ones(tmp_path, folders):
    calibration_folder, inputs = folders
    out = tmp_path / "scan.jsonl"
    sidecar(out, "calibration.json").write_text("mine")
    _scan(tmp_path, inputs, "--id-recall", 0.9, "--calibrate-on", calibration_folder, "--out", out, expect=1)
    assert sidecar(out, "calibration.json").read_text() == "mine"
    sidecar(out, "calibration.json").unlink()
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", calibration_folder, "--out", out)
    _scan(tmp_path, inputs, "--method", "mcm", "--threshold", 0.5, "--overwrite", "--out", out)
    assert not sidecar(out, "calibration.json").exists()  # it described the replaced scan


def test_a_saved_calibration_is_copied_beside_the_manifest_for_the_report(tmp_path, folders):
    from oodfilter.report import write_report

    calibration_folder, inputs = folders
    first = tmp_path / "first.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", calibration_folder, "--out", first)
    second = tmp_path / "second.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--calibration", sidecar(first, "calibration.json"), "--out", second)
    page = write_report(second, tmp_path / "r.html").read_text()
    assert "threshold for ID recall 90% (30 ID images)" in page and "What if: other ID recalls" in page


def test_calibrate_on_a_manifest_resolves_its_relative_paths_from_its_scan_folder(tmp_path, folders, monkeypatch):
    _, inputs = folders
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "ids.jsonl"
    _scan(tmp_path, "calibration", "--out", listing)  # relative paths in the manifest
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "scan.jsonl"
    _scan(tmp_path, inputs, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on", listing, "--out", out)
    assert read_meta(out)["calibration"]["num_images"] == 30


def test_calibrating_on_the_scanned_inputs_themselves_is_warned_about(tmp_path, folders):
    _, inputs = folders
    with pytest.warns(UserWarning, match="every --calibrate-on image is also a scanned input"):
        from oodfilter.scan import scan

        scan(ScanConfig(inputs=[str(inputs)], classes=["tench", "hen"], model="test-tiny", method="mcm",
                        id_recall=0.9, calibrate_on=[str(inputs)], out=str(tmp_path / "s.jsonl"), workers=0,
                        cache_dir=str(tmp_path / "cache")))


def test_a_calibrated_scan_resumes_after_its_calibration_images_are_gone(tmp_path, folders):
    calibration_folder, inputs = folders
    out = tmp_path / "scan.jsonl"
    args = ["--method", "mcm", "--id-recall", 0.9, "--calibrate-on", calibration_folder, "--out", out]
    _scan(tmp_path, inputs, "--include", "img00*", *args)
    threshold = read_meta(out)["threshold"]
    shutil.rmtree(calibration_folder)
    with pytest.warns(UserWarning, match="the --calibrate-on images are gone"):
        from oodfilter.scan import scan

        scan(ScanConfig(inputs=[str(inputs)], classes=["tench", "goldfish", "hen", "ostrich"], model="test-tiny",
                        method="mcm", id_recall=0.9, calibrate_on=[str(calibration_folder)], out=str(out),
                        resume=True, workers=0, cache_dir=str(tmp_path / "cache")))
    rows = read_manifest(out)
    assert len(rows) == 24 and read_meta(out)["threshold"] == threshold
    assert all(row.is_ood == (row.score > threshold) for row in rows)


def test_the_summary_shows_the_calibrated_threshold_and_the_rule(tmp_path, folders):
    """The summary gave counts only: the threshold a calibration chose was in meta.json alone."""
    calibration_folder, inputs = folders
    classes = tmp_path / "classes.txt"
    classes.write_text("tench\ngoldfish\nhen\nostrich\n")
    out = tmp_path / "scan.jsonl"
    result = CliRunner().invoke(cli, ["scan", str(inputs), "--model", "test-tiny", "--classes", str(classes),
                                      "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--method", "mcm",
                                      "--id-recall", "0.9", "--calibrate-on", str(calibration_folder), "--out",
                                      str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    meta = read_meta(out)
    assert meta["threshold"] is not None
    shown = re.escape(f"{meta['threshold']:.6g}")
    assert re.search(rf"│ threshold\s+│ {shown}\s+│", result.output), result.output
    assert re.search(rf"│ decision\s+│ ood_score > {shown} \(calibrated to keep 90% of 30", result.output)
