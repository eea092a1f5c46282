"""`oodfilter apply`: decisions and actions applied to a scanned manifest without rescoring (issue 30, item 2).

Real photos and textures (plus unreadable files, for error rows), scanned once per test with the tiny
model; apply must decide exactly as a scan with the same option would, act through the scan's journal
(undo restores the tree byte for byte), refuse what a scan refuses, and write nothing in a dry run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.decision.calibration import Calibration
from oodfilter.errors import InputError
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest, read_meta, sidecar

CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich", "brambling"]


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture
def scanned(tmp_path: Path, real_images: list[Path], awkward_images, tiny_model, text_cache, monkeypatch):
    """24 real images in two sub-folders and 3 unreadable files, scanned (MCM: no decision) as ``inputs``.

    The rows are relative to ``tmp_path``, where the scan ran; the tests then run in another folder, so
    every row must be resolved from the folder the manifest records.
    """
    folder = tmp_path / "inputs"
    for index, path in enumerate(real_images):
        target = folder / ("photos" if index < 16 else "textures") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    for name in ("zero.jpg", "text.jpg", "truncated.jpg"):
        shutil.copy(awkward_images[0] / name, folder / name)
    out = tmp_path / "scan.jsonl"
    _scan(folder, out, tiny_model, text_cache)
    assert not os.path.isabs(read_manifest(out)[0].path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return folder, out


def _scan(folder: Path, out: Path, model: Any, cache: Path, **options: Any) -> None:
    """Scan ``folder`` from its parent folder (rows relative to it), MCM unless ``method`` says otherwise."""
    options.setdefault("method", "mcm")
    config = ScanConfig(inputs=[folder.name], classes=options.pop("classes", CLASSES), model="test-tiny",
                        out=str(out), workers=0, templates="photo", cache_dir=str(cache), device="cpu", **options)
    with contextlib.chdir(folder.parent):
        scan(config, model=model)


def _file(out: Path, row_path: str) -> Path:
    """The file a row of ``out`` names (rows are relative to the folder the scan ran in)."""
    return Path(read_meta(out)["cwd"]) / row_path


def _apply(*args: Any, expect: int = 0) -> str:
    result = CliRunner().invoke(cli, ["apply", *map(str, args)])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    return result.output


def _error(*args: Any) -> str:
    result = CliRunner().invoke(cli, ["apply", *map(str, args)])
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, InputError), repr(result.exception)
    return str(result.exception)


def _median(out: Path) -> float:
    return statistics.median(row.score for row in read_manifest(out) if row.ok)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file, link and folder under ``root``: bytes, link target, or a folder tag."""
    tree = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            tree[key] = b"-> " + os.readlink(path).encode()
        elif path.is_dir():
            tree[key] = b"<folder>"
        else:
            tree[key] = path.read_bytes()
    return tree


def _review(path: Path, manifest: Path, marks: dict[str, str], threshold: float | None = None) -> Path:
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    path.write_text(json.dumps({"format": "oodfilter-review/1", "manifest": str(manifest.resolve()),
                                "manifest_sha256": digest, "threshold": threshold, "marks": marks}))
    return path


# --- decisions: the same as a scan with the same option ---


def test_threshold_decides_as_a_scan_with_that_threshold(tmp_path, scanned, tiny_model, text_cache):
    folder, out = scanned
    threshold = _median(out)
    _apply(out, "--threshold", threshold, "--out", tmp_path / "applied.jsonl")
    _scan(folder, tmp_path / "direct.jsonl", tiny_model, text_cache, threshold=threshold)
    applied, direct = read_manifest(tmp_path / "applied.jsonl"), read_manifest(tmp_path / "direct.jsonl")
    assert applied == direct
    assert {row.is_ood for row in applied if row.ok} == {True, False}
    assert [row for row in applied if not row.ok] == [row for row in read_manifest(out) if not row.ok]  # left alone
    meta = read_meta(tmp_path / "applied.jsonl")
    assert meta["applied_from"] == str(out.resolve()) and meta["threshold"] == threshold
    assert meta["applied_from_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["decision"] == f"ood_score > {threshold}" and meta["review"] is None
    assert meta["method"] == read_meta(out)["method"] and meta["fingerprints"] == read_meta(out)["fingerprints"]


def test_keep_fraction_decides_as_a_scan_with_that_fraction(tmp_path, scanned, tiny_model, text_cache):
    folder, out = scanned
    summary = oodfilter.apply_manifest(out, keep_fraction=0.4, out=tmp_path / "applied.csv")
    _scan(folder, tmp_path / "direct.jsonl", tiny_model, text_cache, keep_fraction=0.4)
    assert read_manifest(tmp_path / "applied.csv") == read_manifest(tmp_path / "direct.jsonl")
    assert summary.in_distribution == round(0.4 * summary.ok) and summary.ood == summary.ok - summary.in_distribution
    assert read_meta(tmp_path / "applied.csv")["keep_boundary"] == read_meta(tmp_path / "direct.jsonl")["keep_boundary"]


def test_id_recall_on_a_manifest_and_a_saved_calibration_decide_as_the_scan(tmp_path, scanned, real_images,
                                                                            shared_data, tiny_model, text_cache):
    folder, out = scanned
    known = tmp_path / "known-id"
    known.mkdir()
    for path in sorted((shared_data / "imagenet-sample" / "images").iterdir())[100:130]:
        shutil.copy(path, known / path.name)
    _scan(known, tmp_path / "known.jsonl", tiny_model, text_cache)
    _scan(folder, tmp_path / "direct.jsonl", tiny_model, text_cache, id_recall=0.9, calibrate_on=[str(known)])
    _apply(out, "--id-recall", 0.9, "--calibrate-on", tmp_path / "known.jsonl", "--out", tmp_path / "fitted.jsonl")
    assert read_manifest(tmp_path / "fitted.jsonl") == read_manifest(tmp_path / "direct.jsonl")
    fitted = Calibration.load(sidecar(tmp_path / "fitted.jsonl", "calibration.json"))
    scanned_fit = Calibration.load(sidecar(tmp_path / "direct.jsonl", "calibration.json"))
    assert fitted.threshold == scanned_fit.threshold and fitted.scores == scanned_fit.scores
    # the scan's saved calibration, applied as a file, decides the same rows
    saved = sidecar(tmp_path / "direct.jsonl", "calibration.json")
    _apply(out, "--calibration", saved, "--out", tmp_path / "file.jsonl")
    assert read_manifest(tmp_path / "file.jsonl") == read_manifest(tmp_path / "direct.jsonl")
    # images, not a manifest: apply scores nothing
    assert "scores no image" in _error(out, "--id-recall", 0.9, "--calibrate-on", known, "--out", tmp_path / "x.jsonl")


def test_a_calibration_or_calibration_manifest_of_other_scores_is_refused(tmp_path, scanned, tiny_model, text_cache):
    folder, out = scanned
    other = tmp_path / "other.jsonl"
    _scan(folder, other, tiny_model, text_cache, classes=["cat", "dog"])
    message = _error(out, "--id-recall", 0.5, "--calibrate-on", other, "--out", tmp_path / "x.jsonl")
    assert "different class list" in message
    scores = [row.score for row in read_manifest(other) if row.ok]
    meta = read_meta(other)
    identity = {"fingerprints": meta["fingerprints"], "classes_sha256": meta["classes_sha256"],
                "templates": ["a photo of a {}."]}
    fitted = Calibration.fit(scores, 0.5, method=meta["method"], identity=identity)
    fitted.save(tmp_path / "other.calibration.json")
    message = _error(out, "--calibration", tmp_path / "other.calibration.json", "--out", tmp_path / "x.jsonl")
    assert "fitted for a different" in message and "class list" in message
    assert not (tmp_path / "x.jsonl").exists()


# --- the review file ---


def test_review_marks_override_the_threshold_and_unmarked_rows_follow_it(tmp_path, scanned):
    _, out = scanned
    rows = [row for row in read_manifest(out) if row.ok]
    ranked = sorted(rows, key=lambda row: row.score)
    threshold = _median(out)
    low, high = ranked[0], ranked[-1]  # the threshold keeps low and flags high; the marks say the opposite
    error_row = next(row for row in read_manifest(out) if not row.ok)
    review = _review(tmp_path / "review.json", out, {low.path: "drop", high.path: "keep", error_row.path: "drop"},
                     threshold=threshold)
    with pytest.warns(UserWarning, match="--threshold not used"):
        summary = oodfilter.apply_manifest(out, review=review, threshold=123.0, out=tmp_path / "applied.jsonl")
    applied = {row.path: row for row in read_manifest(tmp_path / "applied.jsonl")}
    assert applied[low.path].is_ood is True and applied[high.path].is_ood is False
    for row in rows:
        if row.path not in (low.path, high.path):
            assert applied[row.path].is_ood is (row.score > threshold), row.path
    assert applied[error_row.path] == error_row and summary.ignored_marks == [error_row.path]  # left alone
    meta = read_meta(tmp_path / "applied.jsonl")
    assert meta["review"]["sha256"] == hashlib.sha256(review.read_bytes()).hexdigest()
    assert meta["review"]["marked_drop"] == 2 and meta["review"]["marked_keep"] == 1
    assert meta["decision_rule"] == {"review_threshold": threshold}


def test_without_a_review_threshold_unmarked_rows_take_the_option_else_the_manifest(tmp_path, scanned):
    _, out = scanned
    threshold = _median(out)
    decided = tmp_path / "decided.jsonl"
    _apply(out, "--threshold", threshold, "--out", decided)
    rows = [row for row in read_manifest(decided) if row.ok]
    kept = next(row for row in rows if row.is_ood is False)
    review = _review(tmp_path / "review.json", decided, {kept.path: "drop"})
    _apply(decided, "--review", review, "--out", tmp_path / "from-manifest.jsonl")
    from_manifest = {row.path: row.is_ood for row in read_manifest(tmp_path / "from-manifest.jsonl")}
    assert from_manifest == {row.path: (True if row.path == kept.path else row.is_ood)
                             for row in read_manifest(decided)}
    _apply(decided, "--review", review, "--keep-fraction", 1.0, "--out", tmp_path / "from-option.jsonl")
    from_option = {row.path: row.is_ood for row in read_manifest(tmp_path / "from-option.jsonl") if row.ok}
    assert from_option == {row.path: row.path == kept.path for row in rows}  # keep all, but the one dropped


def test_a_review_is_refused_when_the_manifest_changed_or_it_marks_unknown_paths(tmp_path, scanned):
    _, out = scanned
    first = read_manifest(out)[0]
    unknown = _review(tmp_path / "unknown.json", out, {first.path: "drop", "not/in/the/scan.jpg": "keep"})
    message = _error(out, "--review", unknown, "--out", tmp_path / "a.jsonl")
    assert "not/in/the/scan.jpg" in message and "has no row" in message
    stale = _review(tmp_path / "stale.json", out, {first.path: "drop"})
    out.write_bytes(out.read_bytes() + b"\n")  # the manifest changes after the review was made
    assert "changed since the report was made" in _error(out, "--review", stale, "--out", tmp_path / "a.jsonl")
    bad = json.loads(stale.read_text())
    bad["marks"] = {first.path: "maybe"}
    stale.write_text(json.dumps(bad))
    assert "expected \"keep\" or \"drop\"" in _error(out, "--review", stale, "--out", tmp_path / "a.jsonl")
    assert not list(tmp_path.glob("a.jsonl*"))


def test_only_marked_moves_exactly_the_marked_files_and_undo_restores_them(tmp_path, scanned):
    folder, out = scanned
    decided = tmp_path / "decided.jsonl"
    _apply(out, "--threshold", _median(out), "--out", decided)  # a scan that decided: flagged and kept rows
    rows = [row for row in read_manifest(decided) if row.ok]
    flagged = [row for row in rows if row.is_ood]
    kept = [row for row in rows if row.is_ood is False]
    assert len(flagged) >= 3 and kept
    marks = {kept[0].path: "drop", flagged[0].path: "drop", flagged[1].path: "keep"}
    review = _review(tmp_path / "review.json", decided, marks)
    dest, applied = tmp_path / "dropped", tmp_path / "applied.jsonl"
    # without --only-marked the manifest's flagged rows go too
    every = oodfilter.apply_manifest(decided, review=review, action="move", dest=dest, dry_run=True)
    assert len(every.planned) == len(flagged)  # all flagged, but the one kept, and the one dropped
    before = _tree(folder)
    output = _apply(decided, "--review", review, "--only-marked", "--action", "move", "--dest", dest, "--out", applied)
    placed = sorted(str(path.relative_to(dest)) for path in dest.rglob("*") if not path.is_dir())
    assert placed == sorted(str(_file(out, path).relative_to(folder)) for path in (kept[0].path, flagged[0].path))
    decisions = {row.path: row.is_ood for row in read_manifest(applied) if row.ok}
    assert decisions == {row.path: {"drop": True, "keep": False}.get(marks.get(row.path, ""))
                         for row in rows}  # the marks, and no decision elsewhere
    assert f"{len(rows) - 3} no decision" in output
    assert "review review.json's marks (2 drop, 1 keep); no other row decided (--only-marked)" in output
    meta = read_meta(applied)
    assert meta["decision_rule"] == {"review_marks_only": True} and meta["threshold"] is None
    journal = sidecar(applied, "journal.jsonl")
    assert f"to reverse it: oodfilter undo {journal}" in output
    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == 0 and "undone: 2" in result.output, result.output
    assert _tree(folder) == before


def test_only_marked_needs_a_review_and_takes_no_other_decision(tmp_path, scanned):
    _, out = scanned
    rows = [row for row in read_manifest(out) if row.ok]
    review = _review(tmp_path / "review.json", out, {rows[0].path: "drop"}, threshold=_median(out))
    assert "pass --review" in _error(out, "--only-marked", "--out", tmp_path / "a.jsonl")
    message = _error(out, "--review", review, "--only-marked", "--keep-fraction", 0.5, "--out", tmp_path / "a.jsonl")
    assert "--keep-fraction would decide nothing" in message
    assert not list(tmp_path.glob("a.jsonl*"))
    with pytest.warns(UserWarning, match="--only-marked decides the marked rows alone"):
        summary = oodfilter.apply_manifest(out, review=review, only_marked=True, out=tmp_path / "a.jsonl")
    assert summary.ood == 1 and summary.in_distribution == 0  # the review's threshold decided nothing
    assert [row.path for row in read_manifest(tmp_path / "a.jsonl") if row.is_ood is not None] == [rows[0].path]


def test_a_review_of_an_undecided_scan_acts_on_its_marks_alone(tmp_path, scanned):
    folder, out = scanned  # MCM: the scan decided nothing
    rows = [row for row in read_manifest(out) if row.ok]
    review = _review(tmp_path / "review.json", out, {rows[0].path: "drop", rows[-1].path: "drop",
                                                     rows[1].path: "keep"})
    dest = tmp_path / "copies"
    summary = oodfilter.apply_manifest(out, review=review, action="copy", dest=dest, out=tmp_path / "a.jsonl")
    assert summary.actions is not None and summary.actions.done == 2
    placed = sorted(str(path.relative_to(dest)) for path in dest.rglob("*") if not path.is_dir())
    assert placed == sorted(str(_file(out, row.path).relative_to(folder)) for row in (rows[0], rows[-1]))
    assert summary.ood == 2 and summary.in_distribution == 1 and summary.ok - 3 == len(rows) - 3


# --- actions: the scan's journal, undo, refusals ---


@pytest.mark.parametrize("action", ["move", "copy", "link"])
def test_actions_follow_the_decision_and_undo_restores_the_tree(tmp_path, scanned, action):
    folder, out = scanned
    before = _tree(folder)
    dest = tmp_path / "flagged"
    applied = tmp_path / "applied.jsonl"
    _apply(out, "--threshold", _median(out), "--action", action, "--dest", dest, "--out", applied)
    flagged = [row for row in read_manifest(applied) if row.ok and row.is_ood]
    assert flagged and len(flagged) < sum(row.ok for row in read_manifest(applied))
    placed = sorted(str(path.relative_to(dest)) for path in dest.rglob("*") if not path.is_dir())
    assert placed == sorted(str(_file(out, row.path).relative_to(folder)) for row in flagged)
    assert any(name.startswith("textures/") for name in placed)  # sub-folders kept, as a scan keeps them
    journal = sidecar(applied, "journal.jsonl")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["record"] for line in lines] == ["header"] + ["action"] * len(flagged)
    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == 0 and f"undone: {len(flagged)}" in result.output, result.output
    assert _tree(folder) == before and not any(dest.rglob("*"))


def test_dry_run_writes_nothing(tmp_path, scanned):
    _, out = scanned
    before = _tree(tmp_path)
    output = _apply(out, "--threshold", _median(out), "--action", "move", "--dest", tmp_path / "new" / "flagged",
                    "--dry-run")
    assert "would move" in output and "would write" in output
    output = _apply(out, "--keep-fraction", 0.5, "--action", "list", "--dry-run")
    assert _tree(tmp_path) == before  # no manifest, journal, lock, calibration or folder


def test_refusals_write_nothing(tmp_path, scanned):
    folder, out = scanned
    applied = tmp_path / "applied.jsonl"
    _apply(out, "--threshold", 0.5, "--out", applied)
    assert "already exists" in _error(out, "--threshold", 0.6, "--out", applied)
    _apply(out, "--threshold", 0.6, "--out", applied, "--overwrite")  # replaces a manifest of ours
    assert read_meta(applied)["threshold"] == 0.6
    assert "one of the files apply reads" in _error(out, "--threshold", 0.5, "--out", out, "--overwrite")
    (tmp_path / "notes.jsonl").write_text("mine\n")
    assert "not one" in _error(out, "--threshold", 0.5, "--out", tmp_path / "notes.jsonl", "--overwrite")
    before = _tree(tmp_path)
    message = _error(out, "--threshold", 0.5, "--action", "move", "--dest", folder / "photos" / "ood",
                     "--out", tmp_path / "b.jsonl")
    assert "inside the scanned folder" in message
    assert "no decision" in _error(out, "--action", "copy", "--dest", tmp_path / "d", "--out", tmp_path / "b.jsonl")
    assert "--dest" in _error(out, "--threshold", 0.5, "--action", "move", "--out", tmp_path / "b.jsonl")
    assert _tree(tmp_path) == before


def test_a_file_changed_since_the_scan_becomes_an_error_row_and_is_not_moved(tmp_path, scanned):
    _, out = scanned
    rows = [row for row in read_manifest(out) if row.ok]
    changed = _file(out, rows[0].path)
    changed.write_bytes(changed.read_bytes() + b"\0")  # edited after the scan read it
    stamp = os.stat(sidecar(out, "meta.json")).st_mtime_ns + 10**9
    os.utime(changed, ns=(stamp, stamp))
    dest = tmp_path / "flagged"
    summary = oodfilter.apply_manifest(out, keep_fraction=0.05, action="move", dest=dest, out=tmp_path / "a.jsonl")
    applied = {row.path: row for row in read_manifest(tmp_path / "a.jsonl")}
    assert applied[rows[0].path].status == "error" and "changed since the scan" in str(applied[rows[0].path].error)
    assert summary.changed == [rows[0].path] and changed.exists()
    assert summary.actions is not None and summary.actions.done == len(rows) - 2  # one kept, one changed
    assert not (dest / "photos" / changed.name).exists()


def test_list_prints_the_selected_paths(tmp_path, scanned):
    _, out = scanned
    threshold = _median(out)
    result = CliRunner().invoke(cli, ["apply", str(out), "--threshold", str(threshold), "--action", "list",
                                      "--select", "id", "--out", str(tmp_path / "l.jsonl"), "-q"])
    assert result.exit_code == 0, result.output
    listed = result.stdout_bytes.decode().splitlines()
    expected = [str(_file(out, row.path)) for row in read_manifest(out) if row.ok and row.score <= threshold]
    assert listed == expected and listed


def test_reshard_from_an_applied_decision(tmp_path, real_images, tiny_model, text_cache):
    from shard_data import write_shards  # tests/support

    from oodfilter.data.shards import shard_index, split_sample_name

    shards = write_shards(tmp_path / "shards", real_images[:12], per_shard=6)
    out = tmp_path / "scan.jsonl"
    config = ScanConfig(inputs=[str(path) for path in shards], classes=CLASSES, model="test-tiny", out=str(out),
                        workers=0, templates="photo", cache_dir=str(text_cache), device="cpu", method="mcm")
    scan(config, model=tiny_model)
    dest = tmp_path / "filtered"
    dry = oodfilter.apply_manifest(out, keep_fraction=0.5, action="reshard", dest=dest, dry_run=True)
    assert dry.resharded is not None and not dry.resharded.written and not dest.exists()
    summary = oodfilter.apply_manifest(out, keep_fraction=0.5, action="reshard", dest=dest)
    assert summary.resharded is not None and summary.resharded.written
    assert summary.resharded.kept == 6 and summary.resharded.dropped_selected == 6
    kept = sum(len(shard_index(str(dest / path.name)).samples) for path in shards)
    assert kept == 6
    # a review's marks alone: the marked "drop" samples are left out, every other sample is kept
    samples = [row.path for row in read_manifest(out) if row.ok]
    review = _review(tmp_path / "review.json", out, {samples[0]: "drop", samples[7]: "drop", samples[3]: "keep"})
    with pytest.raises(InputError, match="no decision"):  # without --only-marked the unmarked rows are undecided
        oodfilter.apply_manifest(out, review=review, action="reshard", dest=tmp_path / "refused",
                                 out=tmp_path / "refused.jsonl", dry_run=True)
    marked = tmp_path / "marked"
    summary = oodfilter.apply_manifest(out, review=review, only_marked=True, action="reshard", dest=marked,
                                       out=tmp_path / "marked.jsonl")
    assert summary.resharded is not None and summary.resharded.written
    assert summary.resharded.kept == 10 and summary.resharded.dropped_selected == 2
    left = {(Path(path).name, key) for path in shards for key in shard_index(str(marked / path.name)).samples}
    named = [(Path(shard).name, key) for shard, key in map(split_sample_name, samples)]  # type: ignore[misc]
    assert left == set(named) - {named[0], named[7]}


@pytest.mark.parametrize("where", ["dotdot", "absolute", "linked folder"])
def test_a_row_outside_the_scanned_folders_is_refused_and_nothing_is_moved(tmp_path, scanned, where):
    from dataclasses import replace

    from oodfilter.sinks.manifest import rewrite_manifest

    folder, out = scanned
    victim = tmp_path / "victim"
    victim.mkdir()
    secret = victim / "secret.jpg"
    secret.write_bytes(b"not yours")
    old = os.stat(sidecar(out, "meta.json")).st_mtime_ns - 10**10
    os.utime(secret, ns=(old, old))  # looks unchanged since the scan to an mtime check
    (folder / "photos" / "door").symlink_to(victim, target_is_directory=True)
    edited = {"dotdot": "inputs/../victim/secret.jpg", "absolute": str(secret),
              "linked folder": "inputs/photos/door/secret.jpg"}[where]
    rows = read_manifest(out)
    first = next(index for index, row in enumerate(rows) if row.ok)
    rows[first] = replace(rows[first], path=edited)  # a hand-edited manifest
    rewrite_manifest(out, rows)
    dest = tmp_path / "flagged"
    for action in ("move", "copy", "link"):
        message = _error(out, "--keep-fraction", 0.05, "--action", action, "--dest", dest, "--out",
                         tmp_path / "a.jsonl")
        assert "outside the folders the scan read" in message and edited in message and str(out) in message
    assert secret.read_bytes() == b"not yours" and not dest.exists() and not (tmp_path / "a.jsonl").exists()
    _apply(out, "--keep-fraction", 0.05, "--out", tmp_path / "tagged.jsonl")  # tag acts on no file: allowed


def test_a_manifest_without_a_record_of_its_inputs_is_not_acted_on(tmp_path, scanned):
    _, out = scanned
    sidecar(out, "config.yaml").unlink()  # made by hand, or by an older tool: which folders were read is unknown
    dest = tmp_path / "flagged"
    message = _error(out, "--keep-fraction", 0.05, "--action", "move", "--dest", dest, "--out", tmp_path / "a.jsonl")
    assert "which folders the scan read" in message and str(out) in message
    assert not dest.exists()
    _apply(out, "--keep-fraction", 0.05, "--action", "list", "--out", tmp_path / "l.jsonl")


def test_a_file_moved_away_and_back_is_not_changed_but_a_newer_one_is(tmp_path, scanned):
    _, out = scanned
    rows = [row for row in read_manifest(out) if row.ok]
    restored, rewritten = _file(out, rows[0].path), _file(out, rows[1].path)
    os.rename(restored, tmp_path / "away")  # as a move and its undo do: same bytes and mtime, a new ctime
    os.rename(tmp_path / "away", restored)
    later = os.stat(sidecar(out, "meta.json")).st_mtime_ns + 10**10
    os.utime(rewritten, ns=(later, later))  # written after the scan
    summary = oodfilter.apply_manifest(out, threshold=-1e9, out=tmp_path / "a.jsonl")
    applied = {row.path: row for row in read_manifest(tmp_path / "a.jsonl")}
    assert applied[rows[0].path].status == "ok" and applied[rows[0].path].is_ood is True
    assert applied[rows[1].path].status == "error" and "changed since the scan" in str(applied[rows[1].path].error)
    assert summary.changed == [rows[1].path]


def test_a_file_deleted_since_the_scan_becomes_an_error_row_and_no_folder_is_made_for_it(tmp_path, scanned):
    _, out = scanned
    rows = read_manifest(out)
    textures = [row for row in rows if row.ok and "textures/" in row.path]
    for row in textures:
        _file(out, row.path).unlink()  # every texture gone after the scan
    dest = tmp_path / "flagged"
    output = _apply(out, "--threshold", -1e9, "--action", "move", "--dest", dest, "--dry-run")
    assert f"{len(textures)} files missing since the scan are error rows" in output
    assert not [line for line in output.splitlines() if line.startswith("would move") and "textures/" in line]
    summary = oodfilter.apply_manifest(out, threshold=-1e9, action="move", dest=dest, out=tmp_path / "a.jsonl")
    applied = {row.path: row for row in read_manifest(tmp_path / "a.jsonl")}
    assert all(applied[row.path].status == "error" and "missing since the scan" in str(applied[row.path].error)
               for row in textures)
    assert summary.missing == [row.path for row in textures]
    assert summary.actions is not None and not summary.actions.skipped
    assert summary.actions.done == sum(row.ok for row in rows) - len(textures)
    assert not (dest / "textures").exists()


def test_reshard_refuses_shards_changed_since_the_scan(tmp_path, real_images, tiny_model, text_cache):
    from shard_data import write_shards  # tests/support

    shards = write_shards(tmp_path / "shards", real_images[:12], per_shard=6)
    out = tmp_path / "scan.jsonl"
    config = ScanConfig(inputs=[str(path) for path in shards], classes=CLASSES, model="test-tiny", out=str(out),
                        workers=0, templates="photo", cache_dir=str(text_cache), device="cpu", method="mcm")
    scan(config, model=tiny_model)
    replacement = write_shards(tmp_path / "other", real_images[12:18], per_shard=6)[0]
    later = os.stat(sidecar(out, "meta.json")).st_mtime_ns + 10**10
    shutil.copyfile(replacement, shards[1])  # other samples under the scanned shard's name, written after the scan
    os.utime(shards[1], ns=(later, later))
    dest = tmp_path / "filtered"
    for dry_run in (True, False):
        with pytest.raises(InputError, match="changed since the scan") as refused:
            oodfilter.apply_manifest(out, keep_fraction=0.5, action="reshard", dest=dest, out=tmp_path / "r.jsonl",
                                     dry_run=dry_run)
        assert str(shards[1]) in str(refused.value)
    assert not dest.exists() and not (tmp_path / "r.jsonl").exists()
    shards[0].unlink()
    with pytest.raises(InputError, match="missing since the scan"):
        oodfilter.apply_manifest(out, keep_fraction=0.5, action="reshard", dest=dest, out=tmp_path / "r.jsonl")
    assert not dest.exists()


def test_a_rescored_manifest_acts_within_the_folders_its_source_scan_read(tmp_path, scanned):
    from dataclasses import replace

    from oodfilter.sinks.manifest import rewrite_manifest

    folder, out = scanned
    rescored = tmp_path / "rescored.jsonl"  # as rescore writes it: rows and meta, no config.yaml of its own
    shutil.copyfile(out, rescored)
    meta = {**read_meta(out), "rescored_from": str(out.resolve())}
    sidecar(rescored, "meta.json").write_text(json.dumps(meta))
    dest = tmp_path / "flagged"
    summary = oodfilter.apply_manifest(rescored, threshold=-1e9, action="copy", dest=dest, out=tmp_path / "a.jsonl")
    assert summary.actions is not None and summary.actions.done == summary.ok > 0
    assert read_meta(tmp_path / "a.jsonl")["input_roots"] == [str(folder)]
    rows = read_manifest(rescored)
    rows[0] = replace(rows[0], path=str(tmp_path / "victim.jpg"))
    rewrite_manifest(rescored, rows)
    assert "outside the folders the scan read" in _error(rescored, "--threshold", -1e9, "--action", "copy",
                                                         "--dest", tmp_path / "d2", "--out", tmp_path / "b.jsonl")
