"""Issue 28, cases 8-11: undo trusts only the user's own journals; odd file names and torn CSV tails.

8. A journal (and any key) lying beside the files proves nothing: a forged one must never make ``undo``
   create a file, anywhere. Journals are signed with a key in the user's own state folder, and undo only
   restores into the folders the scan read from.
9. A symbolic link loop (file or folder) is one error row, and nothing special (FIFO, device) is opened.
10. File names that are not UTF-8 round-trip through every manifest format, resume, actions and undo,
    and the report.
11. A CSV manifest cut right after a newline inside a quoted field resumes from its last complete record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

import oodfilter
from oodfilter.cli.main import cli, main
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest

CLASSES = ["tench", "goldfish", "hen"]
EXIT_REFUSED = 3
ODD = b"caf\xe9-\xff.png"  # Latin-1 bytes: not UTF-8, as a name from an old camera or archive


def _images(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (24 + i, 24), (40 * i, 90, 200)).save(path)
        paths.append(path)
    return paths


def _odd_image(folder: Path, name: bytes = ODD) -> Path:
    """Write a PNG whose name is the bytes ``name`` (not UTF-8); return it as Python names it."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.fsencode(folder) + b"/" + name
    Image.new("RGB", (30, 20), (200, 30, 30)).save(raw, format="PNG")
    path = Path(os.fsdecode(raw))
    assert path.exists() and "\udcff" in str(path)
    return path


def _config(tmp_path: Path, inputs: list[Path], out: str = "scan.jsonl", **options: Any) -> ScanConfig:
    return ScanConfig(inputs=[str(p) for p in inputs], classes=CLASSES, out=str(tmp_path / out), model="test-tiny",
                      device="cpu", workers=0, batch_size=2, cache_dir=str(tmp_path / "cache"), **options)


def _undo(journal: Path, expect: int) -> str:
    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == expect, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.output


def _undo_main(journal: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``oodfilter undo`` through the CLI's error boundary: (exit status, everything printed)."""
    try:
        main(["undo", str(journal)])
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    printed = capsys.readouterr()
    return code, printed.out + printed.err


# --- 8. undo trusts only journals the user's own oodfilter wrote, and only restores where the scan read ---


def _attacker_folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A folder the attacker controls holding the payload; the target is an absent file of the user's."""
    home = tmp_path / "home"
    home.mkdir()
    target = home / ".ssh" / "authorized_keys"
    folder = tmp_path / "attacker"
    payload = folder / ".ssh" / "authorized_keys"
    payload.parent.mkdir(parents=True)
    payload.write_bytes(b"ssh-ed25519 AAAA attacker@evil\n")
    return folder, payload, target


def _forge_v2(folder: Path, payload: Path, target: Path) -> Path:
    """The attack as reported: a version-2 journal signed with a key the attacker put in the folder's marker."""
    key = secrets.token_hex(32)
    (folder / ".oodfilter-dest.json").write_text(json.dumps({"written_by": "oodfilter scan --action", "key": key}))
    fields = {"version": 2, "op": "move", "src": str(target), "dst": str(payload), "dest_root": str(folder),
              "token": secrets.token_hex(8), "kind": "file",
              "sha256": hashlib.sha256(payload.read_bytes()).hexdigest()}
    mac = hmac.new(bytes.fromhex(key), json.dumps(fields, ensure_ascii=False, sort_keys=True).encode(),
                   hashlib.sha256).hexdigest()
    journal = folder / "scan.jsonl.journal.jsonl"
    journal.write_text(json.dumps({**fields, "mac": mac}) + "\n")
    return journal


def _forge_current(folder: Path, payload: Path, target: Path) -> Path:
    """The same attack in today's format: a header naming the target's folder as an input, signed with the
    attacker's own key (left beside the journal, in case anything looks there)."""
    from oodfilter.sinks.journal import JournalEntry, JournalHeader, JournalWriter
    from oodfilter.sinks.safe_paths import Fingerprint

    key = secrets.token_bytes(32)
    (folder / "journal.key").write_text(key.hex() + "\n")
    header = JournalHeader.new([target.parent.parent]).signed(key)
    entry = JournalEntry(header, "move", target, payload, folder, secrets.token_hex(8),
                         Fingerprint("file", hashlib.sha256(payload.read_bytes()).hexdigest())).signed(key)
    journal = folder / "scan.jsonl.journal.jsonl"
    with JournalWriter(journal, header) as writer:
        writer.append(entry)
    return journal


@pytest.mark.parametrize("forge", [_forge_v2, _forge_current])
def test_a_forged_journal_in_a_folder_the_attacker_controls_creates_nothing(tmp_path, capsys, forge):
    folder, payload, target = _attacker_folder(tmp_path)
    journal = forge(folder, payload, target)
    code, output = _undo_main(journal, capsys)
    assert code in (2, EXIT_REFUSED), output
    assert not target.exists() and not target.parent.exists()
    assert payload.read_bytes() == b"ssh-ed25519 AAAA attacker@evil\n"
    assert "undone: 1" not in output and "Unexpected" not in output


def test_an_old_journal_is_refused_naming_the_way_back(tmp_path, capsys):
    folder, payload, target = _attacker_folder(tmp_path)
    journal = _forge_v2(folder, payload, target)
    code, output = _undo_main(journal, capsys)
    assert code == 2 and output.startswith("Error: ")
    assert "by hand" in output and "(src)" in output and "(dst)" in output and "older oodfilter" in output
    assert not target.exists()


def test_the_key_lives_in_the_users_state_folder_private_and_made_on_first_use(tmp_path, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("OODFILTER_STATE_DIR", str(state))
    inputs = tmp_path / "inputs"
    images = _images(inputs, 2)
    dest = tmp_path / "dest"
    summary = scan(_config(tmp_path, [inputs], action="copy", dest=str(dest), threshold=-1.0))
    assert summary.actions is not None and summary.actions.done == 2
    key = state / "journal.key"
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) & 0o077 == 0
    assert not any(p.name in ("journal.key", ".oodfilter-dest.json") for p in dest.rglob("*"))
    journal = tmp_path / "scan.jsonl.journal.jsonl"
    assert key.read_text().strip() not in journal.read_text()
    # Another user (another key) cannot undo it; the owner can.
    monkeypatch.setenv("OODFILTER_STATE_DIR", str(tmp_path / "someone-else"))
    output = _undo(journal, expect=EXIT_REFUSED)
    assert "refused: 2" in output and all((dest / p.name).exists() for p in images)
    monkeypatch.setenv("OODFILTER_STATE_DIR", str(state))
    assert "undone: 2; already as before: 0; refused: 0" in _undo(journal, expect=0)
    assert not any(dest.iterdir())


def test_a_key_others_can_read_is_refused_naming_the_fix(tmp_path, monkeypatch, capsys):
    state = tmp_path / "state"
    monkeypatch.setenv("OODFILTER_STATE_DIR", str(state))
    inputs = tmp_path / "inputs"
    _images(inputs, 1)
    scan(_config(tmp_path, [inputs], action="copy", dest=str(tmp_path / "dest"), threshold=-1.0))
    (state / "journal.key").chmod(0o644)
    code, output = _undo_main(tmp_path / "scan.jsonl.journal.jsonl", capsys)
    assert code == 2 and f"chmod 600 {state / 'journal.key'}" in output


def _signed_journal(journal: Path, roots: list[Path], src: Path, dst: Path, dest_root: Path) -> Path:
    """A journal signed with the user's own key, as a buggy or tricked writer could make it."""
    from oodfilter.sinks.journal import JournalEntry, JournalHeader, JournalWriter
    from oodfilter.sinks.safe_paths import Fingerprint
    from oodfilter.sinks.user_key import journal_key

    key = journal_key(create=True)
    assert key is not None
    header = JournalHeader.new(roots).signed(key)
    entry = JournalEntry(header, "move", src, dst, dest_root, secrets.token_hex(8),
                         Fingerprint("file", hashlib.sha256(dst.read_bytes()).hexdigest())).signed(key)
    with JournalWriter(journal, header) as writer:
        writer.append(entry)
    return journal


def test_undo_restores_only_into_a_folder_the_scan_read_from(tmp_path):
    dest = tmp_path / "dest"
    moved = dest / ".ssh" / "authorized_keys"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"a key\n")
    target = tmp_path / "home" / ".ssh" / "authorized_keys"
    journal = _signed_journal(tmp_path / "one.journal.jsonl", [tmp_path / "photos"], target, moved, dest)
    output = _undo(journal, expect=EXIT_REFUSED)
    assert "not below a folder the scan read" in output and not target.exists() and moved.is_file()
    # The same line with the folder it names among the scan's inputs is undone.
    journal = _signed_journal(tmp_path / "two.journal.jsonl", [tmp_path / "photos", tmp_path / "home"], target, moved,
                              dest)
    _undo(journal, expect=0)
    assert target.read_bytes() == b"a key\n"


def test_inputs_named_through_dot_dot_are_moved_and_put_back(tmp_path, monkeypatch):
    inputs = tmp_path / "inputs"
    images = _images(inputs / "sub", 2)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    summary = scan(_config(tmp_path, [Path("..") / "inputs"], action="move", dest=str(tmp_path / "dest"),
                           threshold=-1.0))
    assert summary.actions is not None and summary.actions.done == 2 and not summary.actions.skipped
    assert "undone: 2; already as before: 0; refused: 0" in _undo(tmp_path / "scan.jsonl.journal.jsonl", expect=0)
    assert all(path.is_file() for path in images)


def test_a_line_moved_under_another_journals_header_is_refused(tmp_path, capsys):
    inputs = tmp_path / "inputs"
    _images(inputs, 2)
    scan(_config(tmp_path, [inputs], out="one.jsonl", action="move", dest=str(tmp_path / "d1"), threshold=-1.0))
    other = tmp_path / "other"
    _images(other, 1)
    scan(_config(tmp_path, [other], out="two.jsonl", action="move", dest=str(tmp_path / "d2"), threshold=-1.0))
    one = (tmp_path / "one.jsonl.journal.jsonl").read_text().splitlines()
    two = (tmp_path / "two.jsonl.journal.jsonl").read_text().splitlines()
    spliced = tmp_path / "spliced.journal.jsonl"
    spliced.write_text("\n".join([one[0], *two[1:]]) + "\n")  # one's header, two's lines
    code, output = _undo_main(spliced, capsys)
    assert code == 2 and "header" in output
    assert not (other / "img0.png").exists()


# --- 9. symbolic link loops and special files ---


def test_a_file_symlink_loop_is_one_error_row_per_link(tmp_path):
    folder = tmp_path / "in"
    _images(folder, 2)
    (folder / "a.jpg").symlink_to(folder / "b.jpg")
    (folder / "b.jpg").symlink_to(folder / "a.jpg")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    result = CliRunner().invoke(cli, ["scan", str(folder), "--model", "test-tiny", "--classes", str(classes),
                                      "--out", str(tmp_path / "s.jsonl"), "--workers", "0",
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    rows = {Path(row.path).name: row for row in read_manifest(tmp_path / "s.jsonl")}
    assert sorted(rows) == ["a.jpg", "b.jpg", "img0.png", "img1.png"]
    for name in ("a.jpg", "b.jpg"):
        assert rows[name].status == "error" and "symbolic link" in (rows[name].error or "")


def test_a_looping_link_named_as_input_out_or_dest_is_handled(tmp_path):
    folder = tmp_path / "in"
    images = _images(folder, 1)
    loop = tmp_path / "loop.png"
    loop.symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(loop)
    summary = scan(_config(tmp_path, [loop, *images]))
    assert summary.errors == 1 and summary.ok == 1
    with pytest.raises(oodfilter.InputError, match="symbolic link"):
        scan(_config(tmp_path, images, out="loop.png.jsonl", overwrite=True,
                     **{"dest": str(loop), "action": "copy"}))
    looping_out = tmp_path / "o.jsonl"
    looping_out.symlink_to(tmp_path / "o2.jsonl")
    (tmp_path / "o2.jsonl").symlink_to(looping_out)
    with pytest.raises(oodfilter.OODFilterError):
        scan(_config(tmp_path, images, out="o.jsonl"))


def test_a_folder_symlink_loop_during_discovery_ends(tmp_path):
    folder = tmp_path / "in"
    _images(folder / "sub", 1)
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)  # back to an ancestor
    (folder / "d1.png").symlink_to(folder / "d2.png")  # two links to each other, named like images
    (folder / "d2.png").symlink_to(folder / "d1.png")
    code = ("from oodfilter.scan import ScanConfig, scan; "
            f"scan(ScanConfig(inputs=[{str(folder)!r}], classes={CLASSES!r}, out={str(tmp_path / 's.jsonl')!r}, "
            f"model='test-tiny', device='cpu', workers=0, cache_dir={str(tmp_path / 'cache')!r}))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True)
    rows = {str(Path(row.path).relative_to(folder)): row.status for row in read_manifest(tmp_path / "s.jsonl")}
    assert rows == {"sub/img0.png": "ok", "d1.png": "error", "d2.png": "error"}


def test_links_to_a_fifo_and_a_device_are_error_rows_and_never_opened(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    _images(folder, 1)
    os.mkfifo(tmp_path / "pipe")
    (folder / "pipe.jpg").symlink_to(tmp_path / "pipe")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    opened: list[str] = []
    real_open = os.open

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else "")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    summary = scan(_config(tmp_path, [folder]))
    monkeypatch.undo()
    assert summary.errors == 2 and summary.ok == 1
    rows = {Path(row.path).name: row.error or "" for row in read_manifest(tmp_path / "scan.jsonl")}
    assert "FIFO" in rows["pipe.jpg"] and "device" in rows["zero.jpg"]
    assert not [path for path in opened if path.endswith(("pipe.jpg", "zero.jpg"))]


# --- 10. names that are not UTF-8 ---


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_non_utf8_name_round_trips_through_every_format_and_resume(tmp_path, suffix):
    folder = tmp_path / "in"
    images = _images(folder, 2)
    odd = _odd_image(folder)
    out = f"scan{suffix}"
    summary = scan(_config(tmp_path, [folder], out=out))
    assert summary.total == 3 and summary.ok == 3
    rows = read_manifest(tmp_path / out)
    assert sorted(row.path for row in rows) == sorted(str(p) for p in [*images, odd])
    assert all(os.path.exists(row.path) for row in rows)
    before = (tmp_path / out).read_bytes()
    resumed = scan(_config(tmp_path, [folder], out=out, resume=True))
    assert resumed.total == 3 and (tmp_path / out).read_bytes() == before
    if suffix == ".csv":  # the name's own bytes, the rest UTF-8
        assert os.fsencode(str(odd)) in before
    if suffix == ".parquet":  # the path column holds the names' bytes; the others stay text
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(tmp_path / out)
        assert schema.field("path").type == pa.binary() and schema.field("top_class").type == pa.string()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_move_of_non_utf8_names_completes_and_undo_puts_them_back(tmp_path, suffix):
    folder = tmp_path / "in"
    images = _images(folder, 2)
    odd = _odd_image(folder)
    nested = _odd_image(Path(os.fsdecode(os.fsencode(folder) + b"/sub\xfe")), b"x\xff.png")
    dest = tmp_path / "dest"
    out = f"scan{suffix}"
    summary = scan(_config(tmp_path, [folder], out=out, action="move", dest=str(dest), threshold=-1.0))
    assert summary.actions is not None and summary.actions.done == 4 and not summary.actions.skipped
    assert not odd.exists() and (dest / odd.name).is_file() and (dest / nested.relative_to(folder)).is_file()
    output = _undo(tmp_path / f"{out}.journal.jsonl", expect=0)
    assert "undone: 4; already as before: 0; refused: 0" in output
    assert all(path.is_file() for path in [*images, odd, nested])
    assert not any(dest.iterdir())


def test_undo_refusals_naming_non_utf8_files_are_printed(tmp_path):
    folder = tmp_path / "in"
    odd = _odd_image(folder)
    dest = tmp_path / "dest"
    scan(_config(tmp_path, [folder], action="copy", dest=str(dest), threshold=-1.0))
    (dest / odd.name).write_bytes(b"changed")
    done = subprocess.run([sys.executable, "-m", "oodfilter.cli", "undo", str(tmp_path / "scan.jsonl.journal.jsonl")],
                          capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8",
                                                                 "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == EXIT_REFUSED, done.stderr
    assert b"refused: 1" in done.stdout and b"caf\\xe9-\\xff.png" in done.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_the_report_of_non_utf8_names_is_valid_html(tmp_path, suffix):
    folder = tmp_path / "in"
    _images(folder, 2)
    _odd_image(folder)
    os.symlink(b"/nonexistent", os.fsencode(folder) + b"/gone\xff.png")  # an error row named in the table
    out = tmp_path / f"scan{suffix}"
    scan(_config(tmp_path, [folder], out=out.name))
    result = CliRunner().invoke(cli, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_bytes().decode("utf-8")  # valid UTF-8 throughout
    assert "caf\\xe9-\\xff.png" in page and "gone\\xff.png" in page
    assert 'alt="caf\\xe9-\\xff.png"' in page and 'class="missing"' not in page  # its thumbnail was read


def test_clip_retrieval_metadata_and_the_training_split_take_non_utf8_names(tmp_path):
    import numpy as np

    from oodfilter.sinks.clip_retrieval import read_clip_retrieval, write_clip_retrieval
    from oodfilter.train.data import CaptionedImage, split_pairs

    names = [os.fsdecode(b"/data/caf\xe9.png"), "/data/plain.png"]
    write_clip_retrieval(tmp_path / "emb", names, np.eye(2, 4, dtype=np.float32))
    ids, features = read_clip_retrieval(tmp_path / "emb")
    assert ids == names and features.shape == (2, 4)
    pairs = [CaptionedImage(name, class_name="hen") for name in names]
    train, val = split_pairs(pairs, 0.5)
    assert sorted(p.path for p in train + val) == sorted(names)


def test_a_row_whose_text_is_no_file_name_is_refused(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a\\ud800.png", "status": "error", "error": "x", "ood_score": null, '
                        '"is_ood": null, "top_class": null, "top_prob": null}\n')
    with pytest.raises(oodfilter.InputError, match=r"line 1.*'path'"):
        read_manifest(manifest)


# --- 11. a CSV manifest torn right after a newline inside a quoted field ---


def test_a_csv_record_torn_right_after_a_newline_in_a_quoted_field_is_dropped(tmp_path):
    folder = tmp_path / "in"
    images = _images(folder, 4)
    odd = folder / "line\nbreak.png"  # quoted over two lines in CSV
    Image.new("RGB", (20, 20)).save(odd)
    out = tmp_path / "scan.csv"
    scan(_config(tmp_path, [*images, odd], out="scan.csv"))
    complete = out.read_bytes()
    cut = complete.index(b"line\nbreak") + len(b"line\n")  # right after the newline inside the quotes
    start = complete.rfind(b"\n", 0, complete.index(b'"')) + 1
    out.write_bytes(complete[:cut])
    assert [row.path for row in read_manifest(out)] == [row.path for row in read_manifest_bytes(complete[:start],
                                                                                                tmp_path)]
    summary = scan(_config(tmp_path, [*images, odd], out="scan.csv", resume=True))
    assert summary.total == 5 and out.read_bytes() == complete


def test_a_csv_cut_after_an_escaped_quote_and_newline_is_dropped(tmp_path):
    from oodfilter.sinks.manifest import ManifestWriter
    from oodfilter.sinks.rows import ManifestRow

    out = tmp_path / "m.csv"
    rows = [ManifestRow("a.png", "error", error='says "no"\nthen more'), ManifestRow("b.png", "error", error="x")]
    writer = ManifestWriter(out, append=False)
    writer.write(rows)
    writer.close()
    complete = out.read_bytes()
    for cut in range(complete.index(b"a.png"), complete.index(b"b.png")):
        out.write_bytes(complete[:cut])
        assert read_manifest(out) == [], cut
        writer = ManifestWriter(out, append=True)
        writer.write(rows)
        writer.close()
        assert out.read_bytes() == complete, cut


def read_manifest_bytes(data: bytes, tmp_path: Path) -> list[Any]:
    """Read a CSV manifest held in memory (through a scratch file)."""
    scratch = tmp_path / "scratch.csv"
    scratch.write_bytes(data)
    return read_manifest(scratch)
