"""`oodfilter scan` end to end on real and awkward images with the tiny model."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.features import data_path
from oodfilter.sinks.manifest import read_manifest


def _classes(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("# ID classes\ntench\ngoldfish\ngreat white shark\nhen\nostrich\nbrambling\n")
    return path


def _scan(tmp_path, *args, expect=0):
    result = CliRunner().invoke(
        cli,
        ["scan", "--model", "test-tiny", "--classes", str(_classes(tmp_path)), "--cache-dir", str(tmp_path / "cache"),
         "--workers", "0", "--batch-size", "5", *map(str, args)],
    )
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    return result


@pytest.fixture
def inputs(tmp_path, real_images, awkward_images):
    folder = tmp_path / "inputs"
    (folder / "real").mkdir(parents=True)
    for path in real_images:
        shutil.copy(path, folder / "real" / path.name)
    shutil.copytree(awkward_images[0], folder / "awkward", symlinks=True)
    expected = {str(folder / "real" / p.name): "ok" for p in real_images}
    expected.update({str(folder / "awkward" / name): status for name, status in awkward_images[1].items()})
    return folder, expected


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_every_input_once_with_the_right_status(tmp_path, inputs, suffix):
    folder, expected = inputs
    out = tmp_path / f"manifest{suffix}"
    _scan(tmp_path, folder, "--out", out)
    rows = read_manifest(out)
    assert sorted(row.path for row in rows) == sorted(expected)
    assert {row.path: row.status for row in rows} == expected
    for row in rows:
        if row.status == "ok":
            assert 0.0 <= row.ood_score <= 1.0 and isinstance(row.is_ood, bool)
            assert row.top_class and 0.0 < row.top_prob <= 1.0 and row.error is None
        else:
            assert row.error and row.ood_score is None
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["method"] == "atd" and len(meta["fingerprints"]["yes"]) == 64
    assert out.with_name(out.name + ".config.yaml").is_file()
    if suffix == ".csv":
        with open(out, newline="") as handle:
            header = next(csv.reader(handle))
        assert header == ["path", "status", "error", "ood_score", "is_ood", "top_class", "top_prob"]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(out).num_rows == len(expected)
        assert not out.with_name(out.name + ".partial.jsonl").exists()


def test_formats_agree_and_workers_do_not_change_scores(tmp_path, inputs):
    folder, _ = inputs
    _scan(tmp_path, folder, "--out", tmp_path / "a.jsonl")
    _scan(tmp_path, folder, "--out", tmp_path / "b.csv", "--workers", "2", "--batch-size", "7")
    a = {r.path: r for r in read_manifest(tmp_path / "a.jsonl")}
    b = {r.path: r for r in read_manifest(tmp_path / "b.csv")}
    assert a.keys() == b.keys()
    for path, row in a.items():
        assert row.status == b[path].status
        if row.status == "ok":
            assert row.ood_score == pytest.approx(b[path].ood_score, abs=1e-5)
            assert row.top_class == b[path].top_class


def test_exif_rotation_is_applied_before_scoring(tmp_path, tiny_model):
    # Square, so the centre crop keeps everything; the red quadrant moves when the image is turned.
    photo = Image.new("RGB", (64, 64), (20, 40, 200))
    photo.paste((250, 10, 10), (0, 0, 32, 32))
    photo.paste((10, 250, 10), (32, 32, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    folder = tmp_path / "exif"
    folder.mkdir()
    photo.save(folder / "tagged.png", exif=exif)
    photo.rotate(-90, expand=True).save(folder / "upright.png")
    photo.save(folder / "plain.png")
    # Max-logit is unbounded: a saturating score (ATD reaches 1.0 on these synthetic images) could not tell them apart.
    _scan(tmp_path, folder, "--out", tmp_path / "m.jsonl", "--method", "maxlogit")
    scores = {Path(r.path).name: r.ood_score for r in read_manifest(tmp_path / "m.jsonl")}
    assert scores["tagged.png"] == pytest.approx(scores["upright.png"], abs=1e-6)
    assert scores["tagged.png"] != pytest.approx(scores["plain.png"], abs=1e-6)


def test_existing_manifest_is_never_overwritten_without_asking(tmp_path, awkward_images):
    out = tmp_path / "m.jsonl"
    out.write_text("my own file\n")
    result = _scan(tmp_path, awkward_images[0], "--out", out, expect=1)
    assert isinstance(result.exception, oodfilter.InputError) and "--resume" in str(result.exception)
    assert out.read_text() == "my own file\n"


def test_resume_refuses_other_settings(tmp_path, awkward_images):
    out = tmp_path / "m.jsonl"
    _scan(tmp_path, awkward_images[0], "--out", out)
    result = _scan(tmp_path, awkward_images[0], "--out", out, "--resume", "--method", "ctw", expect=1)
    assert "different method" in str(result.exception)
    result = _scan(tmp_path, awkward_images[0], "--out", out, "--resume", "--threshold", "0.3", expect=1)
    assert "different threshold" in str(result.exception)


def test_strict_exit_code_and_summary(tmp_path, awkward_images):
    result = _scan(tmp_path, awkward_images[0], "--out", tmp_path / "m.jsonl", "--strict", expect=3)
    failures = sum(status == "error" for status in awkward_images[1].values())
    assert re.search(rf"errors\s*│\s*{failures}\b", result.output), result.output
    assert re.search(rf"inputs\s*│\s*{len(awkward_images[1])}\b", result.output)
    total = len(awkward_images[1])
    assert re.search(rf"scanning {total}/{total} \([\d.]+/s\)", result.output)  # plain progress lines
    _scan(tmp_path, awkward_images[0], "--out", tmp_path / "m2.jsonl")  # without --strict errors are rows, exit 0


def test_yaml_config_supplies_defaults_and_flags_win(tmp_path, awkward_images):
    config = tmp_path / "scan.yaml"
    config.write_text(f"method: msp\nthreshold: 0.5\nout: {tmp_path / 'from_yaml.jsonl'}\nbatch_size: 3\n")
    _scan(tmp_path, awkward_images[0], "--config", config, "--method", "mcm")
    resolved = (tmp_path / "from_yaml.jsonl.config.yaml").read_text()
    assert "method: mcm" in resolved and "threshold: 0.5" in resolved and "batch_size: 5" in resolved
    meta = json.loads((tmp_path / "from_yaml.jsonl.meta.json").read_text())
    assert meta["method"] == "mcm" and meta["decision"] == "ood_score > 0.5"


def test_untrained_no_branch_needs_an_explicit_method(tmp_path, fresh_tiny_model, awkward_images):
    config = ScanConfig(inputs=[str(awkward_images[0])], classes=["cat", "dog"], out=str(tmp_path / "m.jsonl"),
                        cache_dir=str(tmp_path / "cache"), workers=0)
    # the plugins installed (csp, neglabel, plp) sit among the built-ins, in name order
    offered = r"pass --method with one of (csp, )?energy, maxlogit, mcm, msp"
    with pytest.raises(oodfilter.InputError, match=offered) as refused:
        scan(config, model=fresh_tiny_model)
    # the reference-fitted methods are offered with what they need, not as if they ran alone
    assert "knn (with --reference), mahalanobis (with --reference)" in str(refused.value)
    config.method = "mcm"
    summary = scan(config, model=fresh_tiny_model)
    assert summary.total == len(awkward_images[1]) and summary.ood == 0 and summary.in_distribution == 0


def _tree_snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.mark.parametrize("action", ["move", "copy", "link"])
def test_actions_and_undo_restore_the_tree(tmp_path, inputs, action):
    folder, _ = inputs
    before = _tree_snapshot(folder)
    dest = tmp_path / "flagged"
    out = tmp_path / "m.jsonl"
    _scan(tmp_path, folder, "--out", out, "--action", action, "--dest", dest, "--threshold", "0.5")
    flagged = [r for r in read_manifest(out) if r.status == "ok" and r.is_ood]
    assert flagged, "threshold 0.5 should flag some images with the tiny model"
    for row in flagged:
        relative = Path(row.path).relative_to(folder)
        assert (dest / relative).exists() or (dest / relative).is_symlink()
        assert Path(row.path).exists() == (action != "move")
    journal = out.with_name(out.name + ".journal.jsonl")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["record"] for line in lines] == ["header"] + ["action"] * len(flagged)  # one line per file acted on
    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == 0, result.output
    assert f"undone: {len(flagged)}" in result.output
    assert _tree_snapshot(folder) == before
    assert not any(dest.rglob("*"))


def test_actions_never_overwrite_and_dry_run_changes_nothing(tmp_path, inputs):
    folder, _ = inputs
    before = _tree_snapshot(folder)
    dest = tmp_path / "flagged"
    result = _scan(tmp_path, folder, "--out", tmp_path / "dry.jsonl", "--action", "move", "--dest", dest,
                   "--threshold", "0.5", "--dry-run")
    assert "would move" in result.output and not dest.exists() and _tree_snapshot(folder) == before
    # A file already at the destination is left alone and its source is not moved.
    first = next(r for r in read_manifest(tmp_path / "dry.jsonl") if r.status == "ok" and r.is_ood)
    occupied = dest / Path(first.path).relative_to(folder)
    occupied.parent.mkdir(parents=True)
    occupied.write_bytes(b"already here")
    _scan(tmp_path, folder, "--out", tmp_path / "m.jsonl", "--action", "move", "--dest", dest, "--threshold", "0.5")
    assert occupied.read_bytes() == b"already here" and Path(first.path).exists()


def test_dest_inside_the_scanned_folder_is_refused(tmp_path, awkward_images):
    folder = tmp_path / "imgs"
    shutil.copytree(awkward_images[0], folder, symlinks=True)
    result = _scan(tmp_path, folder, "--out", tmp_path / "m.jsonl", "--action", "copy", "--dest", folder / "ood",
                   expect=1)
    assert "inside the scanned folder" in str(result.exception)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--save-features"]], ids=["rows", "rows+features"])
def test_killed_scan_resumes_without_duplicates_or_gaps(tmp_path, shared_data, extra):
    images = sorted((shared_data / "imagenet-sample" / "images").iterdir())[:400]
    out = tmp_path / "m.jsonl"
    args = [sys.executable, "-m", "oodfilter.cli", "scan", str(shared_data / "imagenet-sample" / "images"),
            "--include", "n01*", "--classes", str(_classes(tmp_path)), "--model", "test-tiny", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4", "--workers", "1", "--quiet", *extra]
    expected = {str(p) for p in images if p.name.startswith("n01")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if out.is_file() and out.read_bytes().count(b"\n") >= 12:
            break
        time.sleep(0.02)
    assert process.poll() is None, f"scan ended before it could be killed: {process.stderr.read().decode()}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = read_manifest(out)
    assert 12 <= len(partial) < len(expected)
    resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_manifest(out)
    paths = [row.path for row in rows]
    assert len(paths) == len(set(paths)), "duplicate rows after resume"
    assert set(paths) == expected
    assert all(row.status == "ok" for row in rows)
    # Every row (before and after the kill) carries the score a straight scan gives.
    straight = tmp_path / "straight.jsonl"
    subprocess.run([*args[:args.index("--out") + 1], str(straight), *args[args.index("--out") + 2:]], env=env,
                   check=True, capture_output=True)
    reference = {row.path: row.ood_score for row in read_manifest(straight)}
    for row in rows:
        assert row.ood_score == pytest.approx(reference[row.path], abs=1e-5)
    if extra:  # the stored features are still one per row, in row order: rescoring gives the same scores
        assert data_path(out).stat().st_size == len(rows) * 32 * 2
        again = tmp_path / "again.jsonl"
        result = CliRunner().invoke(cli, ["rescore", str(out), "--classes", str(_classes(tmp_path)), "--out",
                                          str(again), "--cache-dir", str(tmp_path / "cache"), "-q"])
        assert result.exit_code == 0, result.output
        # float16 features under test-tiny's logit scale 100 move a score by ~1e-3; a row scored with its
        # neighbour's feature would move by 0.34 on average
        for row in read_manifest(again):
            assert row.ood_score == pytest.approx(reference[row.path], abs=5e-3)
