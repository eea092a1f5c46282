"""Stored image features (scan --save-features) and rescoring from them (oodfilter rescore)."""

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
from oodfilter.decision import recall_threshold
from oodfilter.sinks.features import data_path, header_path, read_header
from oodfilter.sinks.manifest import read_manifest, read_meta


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        pixels = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _run(tmp_path: Path, *args: object, expect: int = 0):
    result = CliRunner().invoke(cli, [*map(str, args)])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    return result


def _classes(tmp_path: Path, name: str, names: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(names) + "\n")
    return path


def _scan(tmp_path, inputs, classes, out, *args, expect=0):
    return _run(tmp_path, "scan", inputs, "--model", "test-tiny", "--classes", classes, "--out", out, "--workers", 0,
                "--batch-size", 4, "--cache-dir", tmp_path / "cache", "-q", *args, expect=expect)


@pytest.fixture
def scanned(tmp_path):
    inputs = _images(tmp_path / "imgs", 14)
    classes = _classes(tmp_path, "a.txt", ["tench", "goldfish", "hen"])
    out = tmp_path / "scan.jsonl"
    _scan(tmp_path, inputs, classes, out, "--save-features")
    return inputs, out


def test_features_are_stored_one_per_ok_row(scanned):
    _, out = scanned
    rows = read_manifest(out)
    header = read_header(out)
    assert header.dim == 32 and data_path(out).parent == out.parent and not Path(header.data).is_absolute()
    assert sum(row.ok for row in rows) == 14 and len(rows) == 15  # the broken file is an error row
    assert data_path(out).stat().st_size == 14 * header.dim * 2  # float16: 2 bytes per value
    stored = np.fromfile(data_path(out), dtype="<f2").reshape(14, header.dim).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=2e-3)  # L2-normalised


@pytest.mark.parametrize("names, method", [(["tench", "goldfish", "hen"], "atd"),
                                           (["ostrich", "brambling", "great white shark", "hen"], "ctw"),
                                           (["ostrich", "hen"], "mcm")])
def test_rescore_equals_a_scan_with_the_same_settings(tmp_path, scanned, names, method):
    inputs, out = scanned
    classes = _classes(tmp_path, "b.txt", names)
    direct = tmp_path / "direct.jsonl"
    _scan(tmp_path, inputs, classes, direct, "--method", method)
    rescored = tmp_path / "rescored.jsonl"
    _run(tmp_path, "rescore", out, "--classes", classes, "--method", method, "--out", rescored, "--cache-dir",
         tmp_path / "cache", "-q")
    expected, got = read_manifest(direct), read_manifest(rescored)
    assert [(r.path, r.status) for r in got] == [(r.path, r.status) for r in expected]
    for a, b in zip(got, expected, strict=True):
        if a.ok:
            assert a.ood_score == pytest.approx(b.ood_score, abs=1e-3)  # float16 storage
            assert a.is_ood == b.is_ood and a.top_class == b.top_class
    meta = read_meta(rescored)
    assert meta["method"] == method and meta["rescored_from"] == str(out.resolve())
    # a rescored manifest can be rescored again: it has the same feature rows, as a file of its own (a hard link)
    assert data_path(rescored).name.startswith("rescored.jsonl.features.")
    assert data_path(rescored).samefile(data_path(out))


def test_rescore_refuses_features_of_another_image_tower(tmp_path, scanned):
    _, out = scanned
    header = json.loads(header_path(out).read_text())
    header_path(out).write_text(json.dumps({**header, "image_fingerprint": "0" * 64}))
    result = _run(tmp_path, "rescore", out, "--classes", _classes(tmp_path, "c.txt", ["hen", "tench"]), "--out",
                  tmp_path / "r.jsonl", "--cache-dir", tmp_path / "cache", expect=1)
    assert "come from another image tower" in str(result.exception)
    assert not (tmp_path / "r.jsonl").exists()


def test_rescore_needs_stored_features_and_never_overwrites(tmp_path, scanned):
    inputs, out = scanned
    plain = tmp_path / "plain.jsonl"
    _scan(tmp_path, inputs, _classes(tmp_path, "a.txt", ["hen", "tench"]), plain)
    classes = _classes(tmp_path, "d.txt", ["hen", "ostrich"])
    result = _run(tmp_path, "rescore", plain, "--classes", classes, "--out", tmp_path / "r.jsonl", expect=1)
    assert "scan with --save-features" in str(result.exception)
    result = _run(tmp_path, "rescore", out, "--classes", classes, "--out", out, expect=1)
    assert "is the manifest being rescored" in str(result.exception)
    result = _run(tmp_path, "rescore", out, "--classes", classes, "--out", plain, expect=1)
    assert "already exists" in str(result.exception)


def test_a_crash_between_features_and_rows_is_cut_back_on_resume(tmp_path):
    inputs = _images(tmp_path / "imgs", 12)
    classes = _classes(tmp_path, "a.txt", ["tench", "goldfish", "hen"])
    out = tmp_path / "scan.jsonl"
    _scan(tmp_path, inputs, classes, out, "--save-features", "--include", "img0*")  # 10 images
    # a crash after a batch's features were written and before its rows reached the manifest
    with open(data_path(out), "ab") as handle:
        handle.write(np.ones((4, 32), dtype="<f2").tobytes())
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:10])  # and a torn last row
    _scan(tmp_path, inputs, classes, out, "--save-features", "--resume")
    rows = read_manifest(out)
    assert len(rows) == 13 and len({r.path for r in rows}) == 13
    assert data_path(out).stat().st_size == sum(r.ok for r in rows) * 32 * 2
    again = tmp_path / "again.jsonl"
    _run(tmp_path, "rescore", out, "--classes", classes, "--out", again, "--cache-dir", tmp_path / "cache", "-q")
    for a, b in zip(read_manifest(again), rows, strict=True):  # every row still has its own feature
        assert a.path == b.path and (not a.ok or a.ood_score == pytest.approx(b.ood_score, abs=1e-3))


def test_resuming_without_the_feature_option_is_refused(tmp_path, scanned):
    inputs, out = scanned
    (inputs / "img99.png").write_bytes((inputs / "img00.png").read_bytes())  # one new input to score
    result = _scan(tmp_path, inputs, _classes(tmp_path, "a.txt", ["tench", "goldfish", "hen"]), out, "--resume",
                   expect=1)
    assert "it stores image features, so rows and features would fall out of step" in str(result.exception)


def test_clip_retrieval_layout_round_trip(tmp_path, scanned):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    _, out = scanned
    folder = tmp_path / "emb"
    _run(tmp_path, "export-features", out, folder)
    block = np.load(folder / "img_emb" / "img_emb_0.npy")
    paths = pq.read_table(folder / "metadata" / "metadata_0.parquet").column("image_path").to_pylist()
    ok = [row for row in read_manifest(out) if row.ok]
    assert block.dtype == np.float16 and block.shape == (len(ok), 32)
    assert paths == [str(Path(row.path).resolve()) for row in ok]
    result = _run(tmp_path, "export-features", out, folder, expect=1)  # never overwrites
    assert "already holds files" in str(result.exception)

    classes = _classes(tmp_path, "e.txt", ["hen", "ostrich", "tench"])
    from_manifest, from_folder = tmp_path / "m.jsonl", tmp_path / "f.jsonl"
    _run(tmp_path, "rescore", out, "--classes", classes, "--out", from_manifest, "--cache-dir", tmp_path / "cache",
         "-q")
    with pytest.warns(UserWarning, match="carry no fingerprint: only their dimension was checked"):
        _run(tmp_path, "rescore", "--clip-retrieval", folder, "--model", "test-tiny", "--classes", classes, "--out",
             from_folder, "--cache-dir", tmp_path / "cache", "-q")
    expected = {str(Path(row.path).resolve()): row for row in read_manifest(from_manifest) if row.ok}
    got = read_manifest(from_folder)
    assert len(got) == len(expected)
    for row in got:
        assert row.ood_score == pytest.approx(expected[row.path].ood_score, abs=1e-3)
        assert row.is_ood == expected[row.path].is_ood


def test_clip_retrieval_input_of_another_dimension_or_without_a_model_is_refused(tmp_path):
    pytest.importorskip("pyarrow")
    from oodfilter.sinks.clip_retrieval import write_clip_retrieval

    folder = tmp_path / "emb"
    write_clip_retrieval(folder, ["a.jpg", "b.jpg"], np.ones((2, 64), dtype=np.float32))
    classes = _classes(tmp_path, "e.txt", ["hen"])
    result = _run(tmp_path, "rescore", "--clip-retrieval", folder, "--classes", classes, "--out", tmp_path / "x.jsonl",
                  expect=1)
    assert "pass --model" in str(result.exception)
    result = _run(tmp_path, "rescore", "--clip-retrieval", folder, "--model", "test-tiny", "--classes", classes,
                  "--out", tmp_path / "x.jsonl", "--cache-dir", tmp_path / "cache", expect=1)
    assert "dimension 64, model 'test-tiny' has 32" in str(result.exception)


def test_a_rescored_manifest_drives_the_manifest_filter(tmp_path, scanned, monkeypatch):
    from oodfilter.pipeline.manifest_filter import ManifestFilter

    _, out = scanned
    rescored = tmp_path / "r.jsonl"
    _run(tmp_path, "rescore", out, "--classes", _classes(tmp_path, "f.txt", ["hen", "tench"]), "--out", rescored,
         "--cache-dir", tmp_path / "cache", "-q")
    monkeypatch.chdir(tmp_path.parent)  # paths are resolved from the scan's folder, not from here
    rows = read_manifest(rescored)
    paths = [str(Path(row.path).resolve()) for row in rows]
    mask = ManifestFilter(rescored).drop_mask(paths)
    assert mask.tolist() == [row.is_ood is not False for row in rows]  # error rows are dropped too


def test_rescore_calibrates_on_stored_features_without_encoding_images(tmp_path, scanned):
    _, out = scanned
    classes = _classes(tmp_path, "g.txt", ["hen", "ostrich", "tench"])
    known = tmp_path / "known.jsonl"  # "known in-distribution": a features scan of 24 more images
    _scan(tmp_path, _images(tmp_path / "known", 24), classes, known, "--save-features")
    shutil.rmtree(tmp_path / "known")  # only the stored features remain
    rescored = tmp_path / "r.jsonl"
    _run(tmp_path, "rescore", out, "--classes", classes, "--method", "mcm", "--id-recall", 0.9, "--calibrate-on",
         known, "--out", rescored, "--cache-dir", tmp_path / "cache", "-q")
    meta = read_meta(rescored)
    assert meta["calibration"]["num_images"] == 24 and "calibrated to keep 90%" in meta["decision"]
    assert all(row.is_ood == (row.score > meta["threshold"]) for row in read_manifest(rescored) if row.ok)
    known_scores = tmp_path / "known-scores.jsonl"  # the known images' scores, from their stored features
    _run(tmp_path, "rescore", known, "--classes", classes, "--method", "mcm", "--out", known_scores, "--cache-dir",
         tmp_path / "cache", "-q")
    scores = torch.tensor([row.score for row in read_manifest(known_scores) if row.ok], dtype=torch.float64)
    assert meta["threshold"] == recall_threshold(scores, 0.9)


def test_a_manifest_rescored_from_a_replaced_scan_keeps_its_own_features_instead_of_reading_other_ones(
        tmp_path, scanned):
    _, out = scanned
    classes = _classes(tmp_path, "h.txt", ["hen", "tench"])
    rescored = tmp_path / "r.jsonl"
    _run(tmp_path, "rescore", out, "--classes", classes, "--out", rescored, "--cache-dir", tmp_path / "cache", "-q")
    _scan(tmp_path, _images(tmp_path / "other", 14), classes, out, "--save-features", "--overwrite")  # same count
    _run(tmp_path, "rescore", rescored, "--classes", classes, "--out", tmp_path / "rr.jsonl", "--cache-dir",
         tmp_path / "cache", "-q")
    replaced = {row.path: row.ood_score for row in read_manifest(out)}
    again = read_manifest(tmp_path / "rr.jsonl")
    assert [(r.path, r.ood_score) for r in again] == [(r.path, r.ood_score) for r in read_manifest(rescored)]
    assert not any(row.path in replaced for row in again)  # the replacing scan's features were not read
    data_path(rescored).unlink()  # with its features gone, it says so
    result = _run(tmp_path, "rescore", rescored, "--classes", classes, "--out", tmp_path / "r3.jsonl", "--cache-dir",
                  tmp_path / "cache", expect=1)
    assert "are gone: the scan they came from was replaced" in str(result.exception)


def test_a_scan_folder_moved_with_its_features_still_rescores(tmp_path, scanned):
    scanned  # noqa: B018 (the fixture made the scan beside tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in tmp_path.glob("scan.jsonl*"):
        path.rename(moved / path.name)
    _run(tmp_path, "rescore", moved / "scan.jsonl", "--classes", _classes(tmp_path, "i.txt", ["hen"]), "--out",
         tmp_path / "r.jsonl", "--cache-dir", tmp_path / "cache", "-q")
    assert sum(row.ok for row in read_manifest(tmp_path / "r.jsonl")) == 14


def test_a_non_finite_score_keeps_a_rescored_manifest_in_step_with_its_features(tmp_path, scanned):
    _, out = scanned
    classes = _classes(tmp_path, "j.txt", ["hen", "tench", "ostrich"])
    header = read_header(out)
    rows = np.fromfile(data_path(out), dtype="<f2").reshape(-1, header.dim)
    rows[0] = np.nan  # the first ok row's feature is damaged: its rescored row becomes an error row
    rows.tofile(data_path(out))
    first = tmp_path / "first.jsonl"
    _run(tmp_path, "rescore", out, "--classes", classes, "--method", "mcm", "--out", first, "--cache-dir",
         tmp_path / "cache", "-q")
    assert sum(not row.ok for row in read_manifest(first)) == 2  # the broken file and the damaged feature
    second = tmp_path / "second.jsonl"
    _run(tmp_path, "rescore", first, "--classes", classes, "--method", "mcm", "--out", second, "--cache-dir",
         tmp_path / "cache", "-q")
    assert [(r.path, r.ood_score) for r in read_manifest(second)] == [(r.path, r.ood_score)
                                                                      for r in read_manifest(first)]


def test_bad_rescore_options_are_refused_before_anything_is_written(tmp_path, scanned):
    _, out = scanned
    classes = _classes(tmp_path, "k.txt", ["hen"])
    for option, message in ((["--keep-fraction", 1.5], r"--keep-fraction must be in \(0, 1\]"),
                            (["--threshold", "nan"], "--threshold must be a finite number"),
                            (["--id-recall", 0], r"--id-recall must be in \(0, 1\]")):
        target = tmp_path / "bad.jsonl"
        result = _run(tmp_path, "rescore", out, "--classes", classes, *option, "--out", target, expect=1)
        assert re.search(message, str(result.exception))
        assert not list(tmp_path.glob("bad.jsonl*"))
    result = _run(tmp_path, "rescore", out, "--classes", classes, "--out", tmp_path / "bad.txt", expect=1)
    assert "unknown format" in str(result.exception) and not list(tmp_path.glob("bad.txt*"))
    header = json.loads(header_path(out).read_text())
    header_path(out).write_text(json.dumps({**header, "dim": 16}))
    result = _run(tmp_path, "rescore", out, "--classes", classes, "--out", tmp_path / "x.jsonl", "--cache-dir",
                  tmp_path / "cache", expect=1)
    assert "come from another image tower" in str(result.exception)


def test_overwriting_with_clip_retrieval_input_drops_the_old_feature_header(tmp_path, scanned):
    pytest.importorskip("pyarrow")
    _, out = scanned
    classes = _classes(tmp_path, "l.txt", ["hen"])
    target = tmp_path / "v.jsonl"
    _run(tmp_path, "rescore", out, "--classes", classes, "--out", target, "--cache-dir", tmp_path / "cache", "-q")
    assert header_path(target).is_file()
    _run(tmp_path, "export-features", out, tmp_path / "emb")
    with pytest.warns(UserWarning):
        _run(tmp_path, "rescore", "--clip-retrieval", tmp_path / "emb", "--model", "test-tiny", "--classes", classes,
             "--out", target, "--overwrite", "--cache-dir", tmp_path / "cache", "-q")
    assert not header_path(target).exists()  # nothing to point at: rescoring it says there are no features


def test_export_refuses_bad_shard_sizes_and_files_in_its_folder(tmp_path, scanned):
    pytest.importorskip("pyarrow")
    _, out = scanned
    result = _run(tmp_path, "export-features", out, tmp_path / "a", "--shard-rows", 0, expect=1)
    assert "--shard-rows must be at least 1" in str(result.exception)
    (tmp_path / "b" / "metadata").mkdir(parents=True)
    (tmp_path / "b" / "metadata" / "metadata_0.parquet").write_text("precious")
    result = _run(tmp_path, "export-features", out, tmp_path / "b", expect=1)
    assert "already holds files" in str(result.exception)
    assert (tmp_path / "b" / "metadata" / "metadata_0.parquet").read_text() == "precious"


def test_calibrating_a_rescore_on_its_own_manifest_is_warned_about(tmp_path):
    classes = _classes(tmp_path, "a.txt", ["tench", "goldfish", "hen"])
    out = tmp_path / "big.jsonl"
    _scan(tmp_path, _images(tmp_path / "imgs", 24), classes, out, "--save-features")  # 24: enough to calibrate
    with pytest.warns(UserWarning, match="--calibrate-on includes the manifest being rescored"):
        _run(tmp_path, "rescore", out, "--classes", _classes(tmp_path, "m.txt", ["hen"]), "--method", "mcm",
             "--id-recall", 0.5, "--calibrate-on", out, "--out", tmp_path / "r.jsonl", "--cache-dir",
             tmp_path / "cache", "-q")


def test_rescore_without_a_decision_says_so_instead_of_0_ood(tmp_path, scanned):
    _, out = scanned
    classes = _classes(tmp_path, "b.txt", ["hen", "tench"])
    result = _run(tmp_path, "rescore", out, "--classes", classes, "--method", "msp", "--out", tmp_path / "r.jsonl",
                  "--cache-dir", tmp_path / "cache")
    assert "no decision for 14 (pass --threshold" in result.output and "0 OOD" not in result.output
    decided = _run(tmp_path, "rescore", out, "--classes", classes, "--method", "msp", "--threshold", "-1",
                   "--out", tmp_path / "d.jsonl", "--cache-dir", tmp_path / "cache")
    assert "14 OOD, 0 in-distribution ->" in decided.output and "no decision" not in decided.output
