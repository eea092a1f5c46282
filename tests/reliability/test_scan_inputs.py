"""Every input gets a row or a clear error: FIFOs, unreadable folders, torn CSV records, one writer per manifest."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import oodfilter
from oodfilter.cli.main import cli, main
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import ManifestWriter, read_manifest
from oodfilter.sinks.rows import ManifestRow

CLASSES = ["tench", "goldfish", "hen"]


def _images(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (24 + i, 24), (40 * i, 90, 200)).save(path)
        paths.append(path)
    return paths


def _config(tmp_path: Path, inputs: list[Path], out: str = "scan.jsonl", **options) -> ScanConfig:
    return ScanConfig(inputs=[str(p) for p in inputs], classes=CLASSES, out=str(tmp_path / out), model="test-tiny",
                      device="cpu", workers=0, batch_size=2, cache_dir=str(tmp_path / "cache"), **options)


def test_a_fifo_is_an_error_row_and_the_scan_does_not_hang(tmp_path):
    folder = tmp_path / "in"
    _images(folder)
    os.mkfifo(folder / "pipe.jpg")
    # a child process, so that a hang fails the test by timeout instead of blocking the suite forever
    code = ("import sys; from oodfilter.scan import ScanConfig, scan; "
            f"scan(ScanConfig(inputs=[{str(folder)!r}], classes={CLASSES!r}, out={str(tmp_path / 's.jsonl')!r}, "
            f"model='test-tiny', device='cpu', workers=0, cache_dir={str(tmp_path / 'cache')!r}))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    rows = {Path(row.path).name: row for row in read_manifest(tmp_path / "s.jsonl")}
    assert rows["pipe.jpg"].status == "error" and "FIFO" in (rows["pipe.jpg"].error or "")
    assert [rows[f"img{i}.png"].status for i in range(3)] == ["ok"] * 3


def test_a_fifo_named_on_the_command_line_is_an_error_row(tmp_path):
    pipe = tmp_path / "named.png"
    os.mkfifo(pipe)
    summary = scan(_config(tmp_path, [pipe, *_images(tmp_path / "in", 1)]))
    assert summary.errors == 1 and summary.ok == 1


def test_an_unreadable_folder_is_an_error_row_and_fails_strict(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    _images(folder)
    locked = folder / "private"
    _images(locked, 2)
    real_scandir = os.scandir

    def scandir(path=".", *args):  # root reads every folder, so the refusal is simulated where it happens
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    result = CliRunner().invoke(cli, ["scan", str(folder), "--classes", _class_file(tmp_path), "--model", "test-tiny",
                                      "--out", str(tmp_path / "s.jsonl"), "--workers", "0", "--strict",
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 3, result.output
    rows = {row.path: row for row in read_manifest(tmp_path / "s.jsonl")}
    assert rows[str(locked)].status == "error" and "permission denied" in (rows[str(locked)].error or "")
    assert sum(row.ok for row in rows.values()) == 3


def _class_file(tmp_path: Path) -> str:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return str(path)


def test_a_csv_record_torn_inside_a_quoted_field_is_dropped_and_resume_completes(tmp_path):
    folder = tmp_path / "in"
    images = _images(folder, 4)
    odd = folder / "line\nbreak.png"  # a path with a newline is quoted over two lines in CSV
    Image.new("RGB", (20, 20)).save(odd)
    out = tmp_path / "scan.csv"
    scan(_config(tmp_path, [*images, odd], out="scan.csv"))
    complete = out.read_bytes()
    assert b'"' in complete
    cut = complete.index(b"line\nbreak") + 6  # inside the quoted path of that record
    start = complete.rfind(b"\n", 0, complete.index(b'"')) + 1
    out.write_bytes(complete[:start] + complete[start:cut])
    assert {Path(row.path).name for row in read_manifest(out)} == {p.name for p in images[: len(read_manifest(out))]}
    summary = scan(_config(tmp_path, [*images, odd], out="scan.csv", resume=True))
    assert summary.total == 5 and out.read_bytes() == complete


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    images = _images(tmp_path / "in")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from oodfilter.sinks.lock import ManifestLock\n"
                               f"with ManifestLock({str(tmp_path / 'scan.jsonl')!r}):\n"
                               "    print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(oodfilter.InputError, match=f"pid {holder.pid}"):
            scan(_config(tmp_path, images))
    finally:
        holder.kill()
        holder.wait()
    assert scan(_config(tmp_path, images)).ok == 3  # the lock died with its holder (killed, not released)


def test_two_scans_started_at_once_never_interleave(tmp_path):
    images = _images(tmp_path / "in", 6)
    code = ("from oodfilter.scan import ScanConfig, scan; "
            f"scan(ScanConfig(inputs={[str(p) for p in images]!r}, classes={CLASSES!r}, "
            f"out={str(tmp_path / 'same.jsonl')!r}, model='test-tiny', device='cpu', workers=0, batch_size=1, "
            f"cache_dir={str(tmp_path / 'cache')!r}))")
    started = time.monotonic()
    runs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(run.wait(timeout=180), run.stderr.read() if run.stderr else "") for run in runs]
    assert time.monotonic() - started < 180
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0
    rows = read_manifest(tmp_path / "same.jsonl")
    assert sorted(row.path for row in rows) == sorted(str(p) for p in images)  # complete, no line twice
    if codes[1] != 0:  # the loser was refused, by the lock or by the finished manifest
        assert "being written by another scan" in outcomes[1][1] + outcomes[0][1] or \
            "already exists" in outcomes[1][1] + outcomes[0][1]


def test_overwrite_replaces_only_a_manifest_and_never_an_input(tmp_path):
    images = _images(tmp_path / "in")
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my own notes, not a manifest\n")
    with pytest.raises(oodfilter.InputError, match="not one"):
        scan(_config(tmp_path, images, out="notes.jsonl", overwrite=True))
    assert notes.read_text() == "my own notes, not a manifest\n"
    with pytest.raises(oodfilter.InputError, match="one of the scanned inputs"):
        scan(ScanConfig(**{**_config(tmp_path, images).__dict__, "out": str(images[0]), "overwrite": True}))
    scan(_config(tmp_path, images))
    assert scan(_config(tmp_path, images, overwrite=True)).total == 3


@pytest.mark.parametrize("content", [
    '{"path": "a.png", "status": "ok"}\n',
    '{"path": "a.png", "status": "ok", "error": null, "ood_score": "high", "is_ood": true, "top_class": "a", '
    '"top_prob": 0.5}\n',
    '{"path": "a.png", "status": "ok", "error": null, "ood_score": 0.5, "is_ood": "yes", "top_class": "a", '
    '"top_prob": 0.5}\n',
    '[1, 2, 3]\n',
])
def test_malformed_manifests_give_a_clear_error_in_report_eval_and_manifest_filter(tmp_path, content, capsys):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text(content)
    from oodfilter.pipeline import ManifestFilter

    with pytest.raises(oodfilter.InputError, match=r"bad\.jsonl line 1"):
        ManifestFilter(manifest)
    for argv in (["report", str(manifest), "--out", str(tmp_path / "r.html")],
                 ["eval", "--model", "test-tiny", "--classes", _class_file(tmp_path), "--id", str(manifest),
                  "--ood", str(manifest)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "bad.jsonl line 1" in err and "Unexpected" not in err, err


def test_a_manifest_row_stored_as_text_is_not_misread(tmp_path):
    manifest = tmp_path / "m.csv"
    ManifestWriter(manifest, append=False).write([ManifestRow("a.png", "ok", ood_score=0.5, is_ood=False,
                                                              top_class="c", top_prob=0.5)])
    text = manifest.read_text().replace("False", "no")
    manifest.write_text(text)
    with pytest.raises(oodfilter.InputError, match="column 'is_ood'"):
        read_manifest(manifest)
