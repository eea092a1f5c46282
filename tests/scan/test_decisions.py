"""Scan decisions from a calibration (--id-recall / --calibration) or a keep fraction, with resume and actions."""

from __future__ import annotations

import json
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
