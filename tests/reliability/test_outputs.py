"""No output clobbers anything without --overwrite, --overwrite replaces only its own kind, OS errors name the path."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from PIL import Image

import oodfilter
from oodfilter.cli.main import main
from oodfilter.errors import OutputError
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest

CLASSES = ["tench", "goldfish", "hen"]


@pytest.fixture
def scanned(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (20, 20), (60 * i, 10, 10)).save(folder / f"p{i}.png")
    out = tmp_path / "scan.jsonl"
    scan(ScanConfig(inputs=[str(folder)], classes=CLASSES, out=str(out), model="test-tiny", device="cpu", workers=0,
                    cache_dir=str(tmp_path / "cache")))
    return out


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_report_never_replaces_the_manifest_or_a_photo(scanned, tmp_path, capsys):
    manifest_bytes = scanned.read_bytes()
    code, err = _run(["report", str(scanned), "--out", str(scanned), "--overwrite"], capsys)
    assert code == 2 and "is an input" in err and scanned.read_bytes() == manifest_bytes
    photo = tmp_path / "in" / "p0.png"
    photo_bytes = photo.read_bytes()
    code, err = _run(["report", str(scanned), "--out", str(photo)], capsys)
    assert code == 2 and "already exists" in err
    code, err = _run(["report", str(scanned), "--out", str(photo), "--overwrite"], capsys)
    assert code == 2 and "replaces only a HTML report" in err and photo.read_bytes() == photo_bytes


def test_report_replaces_its_own_page_only_with_overwrite(scanned, tmp_path, capsys):
    page = tmp_path / "r.html"
    main(["report", str(scanned), "--out", str(page)])
    assert page.read_text().lower().startswith("<!doctype html")
    page.write_text(page.read_text() + "<!-- edited -->")
    code, err = _run(["report", str(scanned), "--out", str(page)], capsys)
    assert code == 2 and "already exists" in err and page.read_text().endswith("<!-- edited -->")
    main(["report", str(scanned), "--out", str(page), "--overwrite"])
    assert not page.read_text().endswith("<!-- edited -->")


def test_a_full_disk_names_the_manifest_and_resume_completes(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (20, 20), (30 * i, 10, 10)).save(folder / f"p{i}.png")
    config = ScanConfig(inputs=[str(folder)], classes=CLASSES, out=str(tmp_path / "scan.jsonl"), model="test-tiny",
                        device="cpu", workers=0, batch_size=2, cache_dir=str(tmp_path / "cache"))
    real_fsync, calls = os.fsync, []

    def fsync(descriptor):
        calls.append(descriptor)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OutputError, match=r"scan\.jsonl: the disk is full"):
        scan(config)
    monkeypatch.setattr(os, "fsync", real_fsync)
    summary = scan(ScanConfig(**{**config.__dict__, "resume": True}))
    rows = read_manifest(tmp_path / "scan.jsonl")
    assert summary.total == 6 and sorted(r.path for r in rows) == sorted(str(p) for p in folder.iterdir())


def test_output_errors_are_oodfilter_errors():
    assert issubclass(OutputError, oodfilter.OODFilterError)


def test_eval_refuses_to_replace_results_or_an_input_without_overwrite(scanned, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    base = ["eval", "--model", "test-tiny", "--classes", str(classes), "--id", str(scanned), "--ood",
            str(tmp_path / "in"), "--methods", "mcm", "--cache-dir", str(tmp_path / "cache")]
    manifest_bytes = scanned.read_bytes()
    code, err = _run([*base, "--out", str(scanned), "--overwrite"], capsys)
    assert code == 2 and "is an input" in err and scanned.read_bytes() == manifest_bytes
    results = tmp_path / "results.json"
    results.write_text("my own notes")
    code, err = _run([*base, "--out", str(results)], capsys)
    assert code == 2 and "already exists" in err
    code, err = _run([*base, "--out", str(results), "--overwrite"], capsys)
    assert code == 2 and "replaces only a results JSON" in err and results.read_text() == "my own notes"
    results.unlink()
    main([*base, "--out", str(results)])
    assert results.read_text().startswith("{") and (tmp_path / "results.mcm.png").is_file()
    main([*base, "--out", str(results), "--overwrite"])


@pytest.mark.parametrize("meta", ["not json", "[1, 2]", '{"method": 3}', '{"fingerprints": "x"}'])
def test_a_damaged_meta_file_is_named_in_resume_report_and_manifest_filter(scanned, tmp_path, meta, capsys):
    from oodfilter.pipeline import ManifestFilter

    (tmp_path / "scan.jsonl.meta.json").write_text(meta)
    with pytest.raises(oodfilter.InputError, match=r"scan\.jsonl\.meta\.json"):
        ManifestFilter(scanned)
    code, err = _run(["report", str(scanned), "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2 and "scan.jsonl.meta.json" in err
    config = ScanConfig(inputs=[str(tmp_path / "in")], classes=CLASSES, out=str(scanned), model="test-tiny",
                        device="cpu", workers=0, cache_dir=str(tmp_path / "cache"), resume=True)
    with pytest.raises(oodfilter.InputError, match=r"scan\.jsonl\.meta\.json"):
        scan(config)


def test_an_atomic_write_that_fails_leaves_no_file_and_names_the_target(tmp_path, monkeypatch):
    from oodfilter.atomic import atomic_write_text

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match=r"page\.html: the disk is full"):
        atomic_write_text(tmp_path / "page.html", "<html></html>")
    assert list(tmp_path.iterdir()) == []
