"""Issue 28, cases 1, 2, 3 and 12: stored features and manifest rows keep their promises.

1. ``--overwrite`` never removes stored features another manifest still points at.
2. Stored features are bound to their manifest rows; a manifest edited by hand, or a header naming another
   scan's features, is refused instead of shifting rows onto their neighbours' features.
3. A path is never counted twice: a kill between writing a Parquet manifest and removing its partial journal
   no longer doubles the rows on resume, and a manifest that repeats a path has each path's first row read,
   by every reader (resume, rescore, report, keep-fraction, ManifestFilter).
12. A full disk (or any refused write) while storing features or manifests names the file and the fix, and a
   resume then completes the scan.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from oodfilter.cli.main import main
from oodfilter.report.summary import summarise_stream
from oodfilter.sinks.features import data_path, header_path, read_header
from oodfilter.sinks.manifest import iter_manifest, read_manifest, read_meta
from oodfilter.sinks.rows import ManifestRow

CLASSES = ["tench", "goldfish", "hen"]


def _images(folder: Path, count: int, seed: int = 7) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 40, (20, 20, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _classes(tmp_path: Path, name: str, names: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(names) + "\n")
    return path


def _cli(capsys, *args: object) -> tuple[int, str]:
    """Run the oodfilter command line through its error boundary; return (exit code, stderr)."""
    capsys.readouterr()
    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    return code, capsys.readouterr().err


def _scan(capsys, tmp_path: Path, inputs: Path, out: Path, *args: object) -> tuple[int, str]:
    return _cli(capsys, "scan", inputs, "--model", "test-tiny", "--classes", _classes(tmp_path, "a.txt", CLASSES),
                "--out", out, "--workers", 0, "--batch-size", 4, "--cache-dir", tmp_path / "cache", "-q", *args)


def _rescore(capsys, tmp_path: Path, source: Path, out: Path, names: list[str], *args: object) -> tuple[int, str]:
    classes = _classes(tmp_path, f"{'-'.join(names)}.txt", names)
    return _cli(capsys, "rescore", source, "--classes", classes, "--method", "mcm", "--out", out, "--cache-dir",
                tmp_path / "cache", "-q", *args)


def _scores(manifest: Path) -> list[tuple[str, str, float | None]]:
    return [(row.path, row.status, row.ood_score) for row in read_manifest(manifest)]


def _ok(result: tuple[int, str]) -> None:
    code, err = result
    if code != 0:
        raise AssertionError(f"exit {code}: {err}")


# --- case 1: --overwrite never removes what another manifest points at ----------------------------------------


@pytest.mark.slow
def test_rescoring_back_over_the_source_keeps_its_features(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "imgs", 10), a, "--save-features"))
    _ok(_rescore(capsys, tmp_path, a, b, ["hen", "ostrich"]))
    _ok(_rescore(capsys, tmp_path, b, a, ["tench", "goldfish"], "--overwrite"))  # the sequence
    # both manifests still have their features: each rescores, to the scores the other one recorded
    _ok(_rescore(capsys, tmp_path, a, tmp_path / "a2.jsonl", ["hen", "ostrich"]))
    _ok(_rescore(capsys, tmp_path, b, tmp_path / "b2.jsonl", ["tench", "goldfish"]))
    assert _scores(tmp_path / "a2.jsonl") == _scores(b)
    assert _scores(tmp_path / "b2.jsonl") == _scores(a)


def test_scanning_over_a_rescored_source_keeps_the_rescored_manifests_features(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "imgs", 10), a, "--save-features"))
    _ok(_rescore(capsys, tmp_path, a, b, ["hen", "ostrich"]))
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "other", 10, seed=3), a, "--save-features", "--overwrite"))
    _ok(_rescore(capsys, tmp_path, b, tmp_path / "b2.jsonl", ["hen", "ostrich"]))  # B's own (the old) features
    assert _scores(tmp_path / "b2.jsonl") == _scores(b)


def test_a_header_of_the_previous_version_pointing_at_a_replaced_scan_keeps_its_features(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "imgs", 10), a, "--save-features"))
    _ok(_rescore(capsys, tmp_path, a, b, ["hen", "ostrich"]))
    # B as the previous version wrote it: a format/1 header naming A's data file, and no file of its own
    header = json.loads(header_path(b).read_text())
    for own in tmp_path.glob("b.jsonl.features.*"):
        if own.suffix != ".json":
            own.unlink()
    header_path(b).write_text(json.dumps({**header, "format": "oodfilter-features/1",
                                          "data": os.path.relpath(data_path(a), tmp_path)}))
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "other", 10, seed=3), a, "--save-features", "--overwrite"))
    with pytest.warns(UserWarning, match="before features were bound to rows"):
        _ok(_rescore(capsys, tmp_path, b, tmp_path / "b2.jsonl", ["hen", "ostrich"]))
    assert _scores(tmp_path / "b2.jsonl") == _scores(b)


# --- case 2: features are bound to their rows ----------------------------------------------------------------


@pytest.fixture
def scanned(tmp_path, capsys) -> Path:
    out = tmp_path / "scan.jsonl"
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "imgs", 10), out, "--save-features"))
    return out


def _delete_an_ok_row(manifest: Path) -> None:
    lines = manifest.read_text().splitlines(keepends=True)
    ok_lines = [i for i, line in enumerate(lines) if json.loads(line)["status"] == "ok"]
    del lines[ok_lines[3]]  # one ok row in the middle
    manifest.write_text("".join(lines))


def test_a_row_deleted_by_hand_is_refused_not_shifted_onto_its_neighbours_features(tmp_path, capsys, scanned):
    _delete_an_ok_row(scanned)
    code, err = _rescore(capsys, tmp_path, scanned, tmp_path / "r.jsonl", ["hen", "ostrich"])
    assert code == 2 and err.startswith("Error: ") and "Unexpected" not in err
    assert str(scanned) in err and data_path(scanned).name in err and "scan again with --save-features" in err
    assert not (tmp_path / "r.jsonl").exists()
    code, err = _cli(capsys, "export-features", scanned, tmp_path / "emb")  # every reader of the features checks
    assert code == 2 and "--save-features" in err


def test_a_header_naming_another_scans_features_by_absolute_path_is_refused(tmp_path, capsys, scanned):
    other = tmp_path / "other.jsonl"
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "more", 10, seed=3), other, "--save-features"))  # same counts
    header = json.loads(header_path(scanned).read_text())
    header_path(scanned).write_text(json.dumps({**header, "data": str(data_path(other).resolve())}))
    code, err = _rescore(capsys, tmp_path, scanned, tmp_path / "r.jsonl", ["hen", "ostrich"])
    assert code == 2 and str(scanned) in err and data_path(other).name in err
    assert not (tmp_path / "r.jsonl").exists()


def test_features_of_the_previous_version_are_read_by_position_and_a_changed_row_count_is_refused(
        tmp_path, capsys, scanned):
    _ok(_rescore(capsys, tmp_path, scanned, tmp_path / "bound.jsonl", ["hen", "ostrich"]))
    header = json.loads(header_path(scanned).read_text())
    header_path(scanned).write_text(json.dumps({**header, "format": "oodfilter-features/1"}))
    data_path(scanned).with_suffix(".keys").unlink()  # the previous version wrote no keys
    with pytest.warns(UserWarning, match="before features were bound to rows"):
        _ok(_rescore(capsys, tmp_path, scanned, tmp_path / "legacy.jsonl", ["hen", "ostrich"]))
    assert _scores(tmp_path / "legacy.jsonl") == _scores(tmp_path / "bound.jsonl")
    _delete_an_ok_row(scanned)
    code, err = _rescore(capsys, tmp_path, scanned, tmp_path / "r.jsonl", ["hen", "ostrich"])
    assert code == 2 and str(scanned) in err and "scan again with --save-features" in err


# --- case 3: a path is never counted twice -------------------------------------------------------------------


class _Killed(BaseException):
    """What a SIGKILL at this point would leave: nothing after it runs (not even finally blocks' later steps)."""


def _kill_at(monkeypatch, point: str) -> None:
    """Kill the process just before the partial journal is removed, or just before the Parquet file is replaced."""
    real_unlink, real_remove, real_replace = Path.unlink, os.remove, os.replace

    def journal(path: object) -> bool:
        return str(path).endswith(".parquet.partial.jsonl")

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if point == "journal" and journal(self):
            raise _Killed
        real_unlink(self, missing_ok=missing_ok)

    def remove(path: str, *args: object, **kwargs: object) -> None:
        if point == "journal" and journal(path):
            raise _Killed
        real_remove(path, *args, **kwargs)  # type: ignore[arg-type]

    def replace(source: str, target: str, *args: object, **kwargs: object) -> None:
        if point == "parquet" and str(target).endswith(".parquet"):
            raise _Killed
        real_replace(source, target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(os, "remove", remove)
    monkeypatch.setattr(os, "unlink", remove)
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["journal", "parquet"])
@pytest.mark.parametrize("keep_fraction", [False, True])
def test_a_kill_while_a_parquet_manifest_is_finalised_gives_each_row_once_on_resume(
        tmp_path, capsys, monkeypatch, point, keep_fraction):
    pytest.importorskip("pyarrow")
    inputs = _images(tmp_path / "imgs", 10)
    out = tmp_path / "scan.parquet"
    extra = ["--keep-fraction", 0.5] if keep_fraction else []
    with monkeypatch.context() as patch:
        _kill_at(patch, point)
        with pytest.raises(_Killed):
            _scan(capsys, tmp_path, inputs, out, "--save-features", *extra)
    _ok(_scan(capsys, tmp_path, inputs, out, "--save-features", "--resume", *extra))
    rows = read_manifest(out)
    assert len(rows) == 11 and len({row.path for row in rows}) == 11
    assert not (tmp_path / "scan.parquet.partial.jsonl").exists()
    if keep_fraction:
        assert sum(row.is_ood is False for row in rows) == 5  # half of the 10 ok rows, not of 20
    counts = summarise_stream(lambda: iter_manifest(out), read_meta(out)).counts  # what report shows
    assert (counts["total"], counts["ok"]) == (11, 10)
    _ok(_rescore(capsys, tmp_path, out, tmp_path / "r.jsonl", ["hen", "ostrich"]))  # features still in step
    assert len(read_manifest(tmp_path / "r.jsonl")) == 11


def test_a_manifest_left_by_the_previous_versions_crash_window_reads_each_row_once(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from oodfilter.pipeline.manifest_filter import ManifestFilter
    from oodfilter.scan.decisions import decide_keep_fraction

    inputs = _images(tmp_path / "imgs", 10)
    out = tmp_path / "scan.parquet"
    _ok(_scan(capsys, tmp_path, inputs, out, "--save-features"))
    rows = read_manifest(out)
    pq.write_table(pq.read_table(out).replace_schema_metadata(None), out)  # as the previous version wrote it
    # both files hold every row, as a kill between the Parquet rename and the journal's removal left them
    (tmp_path / "scan.parquet.partial.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    with pytest.warns(UserWarning, match="more than one row"):
        assert read_manifest(out) == rows
    counts = summarise_stream(lambda: iter_manifest(out), read_meta(out)).counts
    assert counts["total"] == 11 and counts["ok"] == 10
    decide_keep_fraction(out, 0.5)
    assert sum(row.is_ood is False for row in read_manifest(out)) == 5
    paths = [str(Path(row.path).resolve()) for row in rows]
    assert len(ManifestFilter(out).keep_indices(paths)) == 5


def test_a_repeated_path_is_read_once_everywhere_and_its_first_row_wins(tmp_path, capsys, scanned):
    from oodfilter.pipeline.manifest_filter import ManifestFilter

    rows = read_manifest(scanned)
    first = next(row for row in rows if row.ok)
    repeat = ManifestRow(first.path, "ok", ood_score=-1e9, is_ood=not first.is_ood, top_class="x", top_prob=1.0)
    with open(scanned, "a") as handle:  # a hand-edited manifest: a row repeated with another decision
        handle.write(json.dumps(repeat.to_dict()) + "\n")
    with pytest.warns(UserWarning, match="only its first row is used"):
        assert read_manifest(scanned) == rows
        drop = ManifestFilter(scanned).drop_mask([str(Path(first.path).resolve())])
        assert drop.tolist() == [bool(first.is_ood)]
        _ok(_rescore(capsys, tmp_path, scanned, tmp_path / "r.jsonl", ["hen", "ostrich"]))
    assert [row.path for row in read_manifest(tmp_path / "r.jsonl")] == [row.path for row in rows]


# --- case 12: a refused write names the file and the fix; resume completes ---------------------------------


class _FullDisk(io.RawIOBase):
    """A file on a disk with ``budget`` bytes left: writes past it fail as the operating system fails them."""

    def __init__(self, raw: io.FileIO, budget: int, code: int) -> None:
        self.raw, self.budget, self.code = raw, budget, code

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return self.raw.readable()

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if self.budget <= 0:
            raise OSError(self.code, os.strerror(self.code))
        written = self.raw.write(bytes(data[: self.budget]))
        self.budget -= written or 0
        return written or 0

    def readinto(self, buffer) -> int:  # type: ignore[override]
        return self.raw.readinto(buffer) or 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.raw.truncate(size)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


def _fill_disk(monkeypatch, suffix: str, budget: int, code: int = errno.ENOSPC) -> None:
    """Make every file opened for writing whose name ends with ``suffix`` fail after ``budget`` bytes."""
    real_open = builtins.open

    def fake_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
        if not isinstance(file, int) and str(file).endswith(suffix) and any(c in mode for c in "wa+"):
            raw = _FullDisk(io.FileIO(file, mode.replace("b", "").replace("t", "")), budget, code)
            buffered = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)  # type: ignore[arg-type]
            if "b" in mode:
                return buffered
            return io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors, newline=newline)
        return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)  # what pathlib opens files with


@pytest.mark.slow
@pytest.mark.parametrize(("suffix", "budget", "code", "fix"), [  # budgets: room for a batch and a half
    (".f16", 64 * 6 + 10, errno.ENOSPC, "the disk is full"),  # 32 float16 values a row
    (".f16", 64 * 6 + 10, errno.EDQUOT, "quota"),
    (".keys", 8 * 6 + 3, errno.ENOSPC, "the disk is full"),  # 8 bytes a row
    ("scan.jsonl", 1000, errno.ENOSPC, "the disk is full"),
])
def test_a_full_disk_while_storing_features_names_the_file_and_resume_completes(
        tmp_path, capsys, monkeypatch, suffix, budget, code, fix):
    inputs = _images(tmp_path / "imgs", 10)
    out = tmp_path / "scan.jsonl"
    with monkeypatch.context() as patch:
        _fill_disk(patch, suffix, budget=budget, code=code)
        code_, err = _scan(capsys, tmp_path, inputs, out, "--save-features")
    assert code_ == 2 and err.strip().splitlines()[-1].startswith("Error: cannot "), err
    assert "Unexpected" not in err and fix in err and "scan.jsonl" in err and suffix.lstrip(".") in err
    _ok(_scan(capsys, tmp_path, inputs, out, "--save-features", "--resume"))
    rows = read_manifest(out)
    assert len(rows) == 11 and len({row.path for row in rows}) == 11
    direct = tmp_path / "direct.jsonl"  # the resumed scan's features are the images' own: rescore equals a scan
    _ok(_scan(capsys, tmp_path, inputs, direct, "--method", "mcm"))
    _ok(_rescore(capsys, tmp_path, out, tmp_path / "r.jsonl", CLASSES))
    for got, expected in zip(read_manifest(tmp_path / "r.jsonl"), read_manifest(direct), strict=True):
        assert got.path == expected.path and got.status == expected.status
        assert got.ood_score == pytest.approx(expected.ood_score, abs=1e-3)


def test_a_full_disk_while_a_rescore_stores_features_names_the_file(tmp_path, capsys, monkeypatch, scanned):
    header = read_header(scanned)
    stored = np.fromfile(data_path(scanned), dtype="<f2").reshape(-1, header.dim)
    stored[0] = np.nan  # a non-finite score: the rescore writes a feature file of its own, without that row
    stored.tofile(data_path(scanned))
    with monkeypatch.context() as patch:
        _fill_disk(patch, ".f16", budget=100)
        code, err = _rescore(capsys, tmp_path, scanned, tmp_path / "r.jsonl", ["hen", "ostrich"])
    assert code == 2 and "Unexpected" not in err and "r.jsonl.features." in err and "the disk is full" in err


def test_a_disk_full_from_the_start_names_the_lock_file(tmp_path, capsys, monkeypatch):
    real_write = os.write

    def write(descriptor: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".lock"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(descriptor, data)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file a descriptor is")
    monkeypatch.setattr(os, "write", write)
    code, err = _scan(capsys, tmp_path, _images(tmp_path / "imgs", 2), tmp_path / "scan.jsonl", "--save-features")
    assert code == 2 and "Error: cannot write the lock file" in err and "scan.jsonl.lock: the disk is full" in err


# --- siblings: features shared by copy where links fail, a scan of the previous version resumed ------------


def test_where_hard_links_fail_a_rescore_copies_the_features_and_keeps_them(tmp_path, capsys, monkeypatch, scanned):
    def no_link(source: object, target: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))  # --out on another file system

    monkeypatch.setattr(os, "link", no_link)
    rescored = tmp_path / "r.jsonl"
    _ok(_rescore(capsys, tmp_path, scanned, rescored, ["hen", "ostrich"]))
    assert data_path(rescored).read_bytes() == data_path(scanned).read_bytes()
    assert not data_path(rescored).samefile(data_path(scanned))
    _ok(_scan(capsys, tmp_path, _images(tmp_path / "other", 10, seed=3), scanned, "--save-features", "--overwrite"))
    _ok(_rescore(capsys, tmp_path, rescored, tmp_path / "r2.jsonl", ["hen", "ostrich"]))
    assert _scores(tmp_path / "r2.jsonl") == _scores(rescored)


def test_resuming_a_scan_of_the_previous_version_binds_its_features(tmp_path, capsys):
    inputs = _images(tmp_path / "imgs", 10)
    out = tmp_path / "scan.jsonl"
    _ok(_scan(capsys, tmp_path, inputs, out, "--save-features", "--include", "img0[0-5]*"))  # 6 of the 10
    header = json.loads(header_path(out).read_text())
    header_path(out).write_text(json.dumps({**header, "format": "oodfilter-features/1"}))
    data_path(out).with_suffix(".keys").unlink()
    _ok(_scan(capsys, tmp_path, inputs, out, "--save-features", "--resume"))
    assert read_header(out).bound and len(read_manifest(out)) == 11
    _delete_an_ok_row(out)  # now bound: a hand edit is caught
    code, err = _rescore(capsys, tmp_path, out, tmp_path / "r.jsonl", ["hen"])
    assert code == 2 and "do not belong to the rows of" in err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.binary(max_size=120), header=st.dictionaries(st.sampled_from(
    ["format", "dtype", "dim", "data", "image_fingerprint", "model"]), st.none() | st.integers(-2, 70) | st.text(
    max_size=30) | st.sampled_from(["oodfilter-features/2", "oodfilter-features/1", "float16", "x.f16"])),
    paths=st.lists(st.text(max_size=8) | st.just("\udcff.png"), max_size=6))
def test_any_feature_header_and_keys_file_give_features_or_a_named_error(tmp_path, keys, header, paths):
    from oodfilter.errors import InputError
    from oodfilter.sinks.features import load_features

    manifest = tmp_path / "m.jsonl"
    (tmp_path / "x.f16").write_bytes(bytes(64 * 6))
    (tmp_path / "x.keys").write_bytes(keys)
    base = {"format": "oodfilter-features/2", "dtype": "float16", "dim": 32, "data": "x.f16",
            "image_fingerprint": "f", "model": "m"}
    header_path(manifest).write_text(json.dumps({**base, **header}))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a format-1 header warns that only the count is checked
            features = load_features(manifest, paths)
    except InputError as error:
        assert str(error)
    else:
        assert features.shape[0] == len(paths)
