"""`undo` and the file actions under hostile conditions: edited files and journals, links, kills, full disks."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from oodfilter.cli.main import cli
from oodfilter.errors import InputError, OODFilterError
from oodfilter.sinks import file_ops
from oodfilter.sinks.actions import apply_actions, plan_actions, undo_journal

EXIT_REFUSED = 3


def _make_inputs(folder: Path, count: int = 4, size: int = 4096, seed: int = 0) -> dict[Path, bytes]:
    rng = random.Random(seed)
    files = {}
    for index in range(count):
        path = folder / ("a" if index % 2 else "b") / f"img{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        files[path] = rng.randbytes(size)
        path.write_bytes(files[path])
    return files


def _act(op: str, inputs: Path, files: Any, dest: Path, journal: Path) -> None:
    report = apply_actions(plan_actions(op, [(p, p.relative_to(inputs)) for p in files], dest), journal)
    assert report.done == len(files) and not report.skipped, report


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file, link and folder under ``root`` with its bytes (a link: its target; a folder: a tag)."""
    tree = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            tree[str(path)] = b"-> " + os.readlink(path).encode()
        elif path.is_dir():
            tree[str(path)] = b"<folder>"
        else:
            tree[str(path)] = path.read_bytes()
    return tree


def _undo(journal: Path, expect: int) -> str:
    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == expect, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.output


def _edit_journal(journal: Path, change: Callable[[dict[str, Any]], None]) -> None:
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for line in lines:
        if line.get("record") != "header":  # the run's header names no file
            change(line)
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, dict[Path, bytes], Path, Path]:
    inputs = tmp_path / "inputs"
    return inputs, _make_inputs(inputs), tmp_path / "dest", tmp_path / "m.jsonl.journal.jsonl"


@pytest.fixture
def two_file_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every hard link between two different folders fail with EXDEV, as across file systems."""
    real_link = os.link

    def link(src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None, follow_symlinks: bool = True):
        if src_dir_fd != dst_dir_fd:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(os, "link", link)


@contextmanager
def _tmpfs(mount: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (a second, small file system)")
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _leftover_temps(*roots: Path) -> list[Path]:
    return [path for root in roots for path in root.rglob("*.oodtmp")]


# --- copies and links: removed only while identical to what was written, with the original intact ---


def test_copy_changed_or_without_original_is_refused(world):
    inputs, files, dest, journal = world
    _act("copy", inputs, files, dest, journal)
    paths = list(files)
    copies = [dest / p.relative_to(inputs) for p in paths]
    paths[0].unlink()  # the original gone and one byte of its copy changed (same size): the tester's case
    copies[0].write_bytes(b"X" + files[paths[0]][1:])
    copies[1].write_bytes(files[paths[1]][:-1] + b"Y")  # the copy edited, its original intact
    paths[2].unlink()  # the original gone, the copy intact: it is the only one left
    output = _undo(journal, expect=EXIT_REFUSED)
    assert "undone: 1;" in output and "refused: 3" in output
    assert copies[0].read_bytes() == b"X" + files[paths[0]][1:]
    assert copies[1].read_bytes() == files[paths[1]][:-1] + b"Y"
    assert copies[2].read_bytes() == files[paths[2]]
    assert not copies[3].exists() and paths[3].read_bytes() == files[paths[3]]
    assert str(copies[0]) in output and "missing" in output


def test_link_is_removed_only_while_it_points_at_the_present_original(world):
    inputs, files, dest, journal = world
    _act("link", inputs, files, dest, journal)
    paths = list(files)
    links = [dest / p.relative_to(inputs) for p in paths]
    links[0].unlink()
    links[0].symlink_to(paths[1])  # now a link to another file
    paths[2].unlink()  # the file it links to is gone
    output = _undo(journal, expect=EXIT_REFUSED)
    assert "undone: 2;" in output and "refused: 2" in output
    assert os.readlink(links[0]) == str(paths[1]) and os.readlink(links[2]) == str(paths[2])
    assert not links[1].is_symlink() and not links[3].is_symlink()


@pytest.mark.parametrize("op", ["move", "copy"])
def test_a_linked_input_is_moved_as_a_link_and_copied_as_bytes(tmp_path, world, op):
    inputs, files, dest, journal = world
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"the linked bytes")
    (inputs / "b" / "linked.bin").symlink_to(outside)
    before = _snapshot(inputs)
    _act(op, inputs, [*files, inputs / "b" / "linked.bin"], dest, journal)
    landed = dest / "b" / "linked.bin"
    assert landed.is_symlink() == (op == "move") and landed.read_bytes() == b"the linked bytes"
    _undo(journal, expect=0)
    assert _snapshot(inputs) == before and outside.read_bytes() == b"the linked bytes"


# --- hostile journals: refused, exit non-zero, nothing touched ---


def _dst_outside_root(tmp_path: Path, files: dict[Path, bytes], line: dict[str, Any]) -> None:
    # An unrelated file holding the very same bytes, so only the path check can stop it.
    relative = Path(line["dst"]).relative_to(line["dest_root"])
    unrelated = tmp_path / "unrelated" / relative
    unrelated.parent.mkdir(parents=True, exist_ok=True)
    unrelated.write_bytes(files[Path(line["src"])])
    line["dst"] = str(unrelated)


def _move_between_user_folders(tmp_path: Path, files: dict[Path, bytes], line: dict[str, Any]) -> None:
    relative = Path(line["dst"]).relative_to(line["dest_root"])
    mine = tmp_path / "user" / "photos" / relative
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_bytes(b"my own photo")
    line.update(op="move", src=str(tmp_path / "user" / "other" / relative), dst=str(mine))
    line["sha256"] = hashlib.sha256(b"my own photo").hexdigest()


def _src_redirected(tmp_path: Path, files: dict[Path, bytes], line: dict[str, Any]) -> None:
    # Same relative path, another user folder: the path rules pass, the line's signature does not.
    line["src"] = str(tmp_path / "user" / "elsewhere" / Path(line["dst"]).relative_to(line["dest_root"]))


def _crafted_dest_root(tmp_path: Path, files: dict[Path, bytes], line: dict[str, Any]) -> None:
    line["dest_root"] = str(tmp_path)  # a parent of the real destination: pruning must not climb there


def _root_is_slash(tmp_path: Path, files: dict[Path, bytes], line: dict[str, Any]) -> None:
    line["dest_root"] = "/"


@pytest.mark.parametrize("op", ["copy", "move"])
@pytest.mark.parametrize(
    "edit", [_dst_outside_root, _move_between_user_folders, _src_redirected, _crafted_dest_root, _root_is_slash]
)
def test_hostile_journal_lines_are_refused(tmp_path, world, op, edit):
    inputs, files, dest, journal = world
    _act(op, inputs, files, dest, journal)
    _edit_journal(journal, lambda line: edit(tmp_path, files, line))
    before = _snapshot(tmp_path)
    output = _undo(journal, expect=EXIT_REFUSED)
    assert f"undone: 0; already as before: 0; refused: {len(files)}" in output
    assert _snapshot(tmp_path) == before


def test_malformed_journal_is_refused_before_anything_is_touched(world):
    inputs, files, dest, journal = world
    _act("move", inputs, files, dest, journal)
    lines = journal.read_text().splitlines()
    before = _snapshot(dest)
    for bad in ["{not json", json.dumps({**json.loads(lines[1]), "sha256": 42}), json.dumps({"op": "move"})]:
        journal.write_text("\n".join([lines[0], bad, *lines[2:]]) + "\n")
        with pytest.raises(InputError, match="line 2"):
            undo_journal(journal)
        assert _snapshot(dest) == before
        assert "Error:" in _undo_via_main(journal, expect=2)


def _undo_via_main(journal: Path, expect: int) -> str:
    done = subprocess.run([sys.executable, "-m", "oodfilter.cli", "undo", str(journal)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout + done.stderr


# --- links planted inside the destination ---


def test_symlink_swapped_into_the_destination_is_refused(tmp_path, world):
    inputs, files, dest, journal = world
    _act("move", inputs, files, dest, journal)
    # The folder dest/a becomes a link to a look-alike folder elsewhere holding the same bytes.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dest / "a", elsewhere / "a")
    shutil.rmtree(dest / "a")
    (dest / "a").symlink_to(elsewhere / "a", target_is_directory=True)
    # One file in dest/b becomes a link to a look-alike file.
    moved = dest / "b" / "img0.bin"
    (elsewhere / "img0.bin").write_bytes(moved.read_bytes())
    moved.unlink()
    moved.symlink_to(elsewhere / "img0.bin")
    before = _snapshot(elsewhere)
    output = _undo(journal, expect=EXIT_REFUSED)
    assert "undone: 1;" in output and "refused: 3" in output and "symbolic link" in output
    assert _snapshot(elsewhere) == before
    assert not (inputs / "a" / "img1.bin").exists() and not (inputs / "b" / "img0.bin").exists()
    assert (inputs / "b" / "img2.bin").read_bytes() == files[inputs / "b" / "img2.bin"]


# --- idempotence and interrupted states ---


@pytest.mark.parametrize("op", ["move", "copy", "link"])
def test_second_undo_finds_nothing_to_do(world, op):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act(op, inputs, files, dest, journal)
    # the destination holds what the scan put there and nothing else (no key, no marker beside the files)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*") if not p.is_dir()) == \
        sorted(p.relative_to(inputs) for p in files)
    assert f"undone: {len(files)}; already as before: 0; refused: 0" in _undo(journal, expect=0)
    assert _snapshot(inputs) == before and not any(dest.iterdir())
    assert f"undone: 0; already as before: {len(files)}; refused: 0" in _undo(journal, expect=0)
    assert _snapshot(inputs) == before


def test_lines_of_an_earlier_scan_into_a_re_marked_folder_count_as_undone(world):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act("copy", inputs, files, dest, journal)
    _undo(journal, expect=0)  # the marker goes with the last copy
    _act("move", inputs, files, dest, journal)  # a new marker, a new key; the copy lines stay in the journal
    output = _undo(journal, expect=0)
    assert f"undone: {len(files)}; already as before: {len(files)}; refused: 0" in output
    assert _snapshot(inputs) == before and not any(dest.iterdir())


def test_undo_finishes_what_a_killed_action_or_undo_left(world, two_file_systems):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act("move", inputs, files, dest, journal)
    entries = [e for e in map(json.loads, journal.read_text().splitlines()) if e.get("record") != "header"]
    first, second, third = (Path(e["src"]) for e in entries[:3])
    # Killed after the file was put back but before the moved one was removed: both names, same bytes.
    first.write_bytes(files[first])
    # Killed while copying back across file systems: a partial temp file beside the original place.
    (second.parent / f".{second.name}.{entries[1]['token']}.oodtmp").write_bytes(files[second][:100])
    # Killed while the scan copied: a partial temp in the destination.
    (Path(entries[2]["dst"]).parent / f".{third.name}.{entries[2]['token']}.oodtmp").write_bytes(b"par")
    # Killed while writing a journal line: a torn last line.
    with open(journal, "a") as log:
        log.write('{"version": 2, "op": "mo')
    lines = journal.read_text().count("\n") + 1
    # Every complete line is undone, but the torn one is reported (its action may have run), never passed over.
    assert f"line {lines} is incomplete" in _undo(journal, expect=EXIT_REFUSED)
    assert _snapshot(inputs) == before and not any(dest.iterdir())
    assert not _leftover_temps(inputs, dest)


def test_a_journal_cut_mid_line_undoes_its_complete_lines_and_reports_the_cut_one(world):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act("move", inputs, files, dest, journal)
    data = journal.read_bytes()
    journal.write_bytes(data[:-20])  # the last action's line cut: its file was moved, and cannot be put back
    output = _undo(journal, expect=EXIT_REFUSED)
    last = data.count(b"\n")
    assert f"journal {journal} line {last} is incomplete" in output and "was not undone" in output
    assert "undone: 3;" in output
    moved = json.loads(data.splitlines()[-1])
    assert not Path(moved["src"]).exists() and Path(moved["dst"]).exists()
    assert sum(path.exists() for path in files) == 3
    journal.write_bytes(data[:30])  # only the header, cut
    assert "line 1 is incomplete" in _undo(journal, expect=EXIT_REFUSED)
    journal.write_bytes(data)
    _undo(journal, expect=0)
    assert _snapshot(inputs) == before


def test_a_journal_whose_last_line_only_lacks_its_newline_is_undone_whole(world):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act("move", inputs, files, dest, journal)
    journal.write_bytes(journal.read_bytes()[:-1])
    assert "undone: 4; already as before: 0; refused: 0" in _undo(journal, expect=0)
    assert _snapshot(inputs) == before and not any(dest.iterdir())


def test_rerun_after_a_kill_resumes_the_move(world):
    inputs, files, dest, journal = world
    _act("move", inputs, files, dest, journal)
    src = next(iter(files))
    src.write_bytes(files[src])  # killed between placing the file and removing the original
    report = apply_actions(plan_actions("move", [(p, p.relative_to(inputs)) for p in files], dest), journal)
    assert report.done == 1 and report.already_done == 3 and not report.skipped
    assert not src.exists()


def test_cross_file_system_move_and_undo_are_byte_exact(world, two_file_systems):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act("move", inputs, files, dest, journal)
    assert all((dest / p.relative_to(inputs)).read_bytes() == data and not p.exists() for p, data in files.items())
    _undo(journal, expect=0)
    assert _snapshot(inputs) == before and not _leftover_temps(inputs, dest)


# --- full disks ---


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """Let ``budget`` bytes through ``write_all``, then fail the way a full disk does, half-way in a write."""
    real = file_ops.write_all
    left = [budget]

    def write_all(handle: int, data: bytes) -> None:
        if len(data) > left[0]:
            real(handle, data[: left[0]])
            left[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= len(data)
        real(handle, data)

    monkeypatch.setattr(file_ops, "write_all", write_all)


def test_full_disk_during_a_copy_names_the_file_and_leaves_nothing_partial(world, monkeypatch):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _fill_disk_after(monkeypatch, budget=4096 + 1000)  # the first file fits, the second stops half-way
    with pytest.raises(OODFilterError, match="disk is full") as caught:
        apply_actions(plan_actions("copy", [(p, p.relative_to(inputs)) for p in files], dest), journal)
    second = dest / list(files)[1].relative_to(inputs)
    assert str(second) in str(caught.value) and "no partial file" in str(caught.value)
    assert not second.exists() and not _leftover_temps(dest)
    assert [p.name for p in dest.rglob("*.bin")] == [next(iter(files)).name]
    assert _snapshot(inputs) == before
    monkeypatch.undo()
    _undo(journal, expect=0)
    assert not any(dest.iterdir()) and _snapshot(inputs) == before


def test_full_disk_during_undo_is_refused_cleanly_and_a_rerun_finishes(world, monkeypatch, two_file_systems):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act("move", inputs, files, dest, journal)
    real_write_all = file_ops.write_all
    _fill_disk_after(monkeypatch, budget=4096 + 1000)
    output = _undo(journal, expect=EXIT_REFUSED)
    assert "refused: 3" in output and "disk is full" in output
    assert not _leftover_temps(inputs, dest)
    for path, data in files.items():  # each file whole in one place, never partial
        assert (path if path.exists() else dest / path.relative_to(inputs)).read_bytes() == data
    monkeypatch.setattr(file_ops, "write_all", real_write_all)  # space freed; the cross-device patch stays
    _undo(journal, expect=0)
    assert _snapshot(inputs) == before and not any(dest.iterdir())


def test_a_really_full_disk(tmp_path):
    inputs = tmp_path / "inputs"
    files = _make_inputs(inputs, count=3, size=400_000)
    with _tmpfs(tmp_path / "small", "1m") as dest:
        journal = tmp_path / "m.jsonl.journal.jsonl"
        with pytest.raises(OODFilterError, match="disk is full"):
            apply_actions(plan_actions("copy", [(p, p.relative_to(inputs)) for p in files], dest), journal)
        assert not _leftover_temps(dest)
        for path in dest.rglob("*.bin"):
            assert path.read_bytes() == files[inputs / path.relative_to(dest)]
        _undo(journal, expect=0)
        assert not any(p.is_file() for p in dest.rglob("*"))


def test_a_read_only_destination(tmp_path):
    inputs = tmp_path / "inputs"
    files = _make_inputs(inputs, count=2)
    with _tmpfs(tmp_path / "ro", "1m") as dest:
        subprocess.run(["mount", "-o", "remount,ro", str(dest)], check=True)
        with pytest.raises(OODFilterError, match="read-only: remount it writable") as caught:
            apply_actions(plan_actions("copy", [(p, p.relative_to(inputs)) for p in files], dest),
                          tmp_path / "m.jsonl.journal.jsonl")
        assert str(dest) in str(caught.value)


# --- kill -9, for real, across two file systems ---

_CHILD = r"""
import sys
from pathlib import Path

mode, inputs, dest, journal = sys.argv[1:5]
if mode == "move":
    from oodfilter.sinks.actions import apply_actions, plan_actions
    files = sorted(Path(inputs).rglob("*.bin"))
    print("ready", flush=True)
    apply_actions(plan_actions("move", [(p, p.relative_to(inputs)) for p in files], Path(dest)), Path(journal))
else:
    from oodfilter.cli.main import main
    print("ready", flush=True)
    main(["undo", journal])
"""


def _run_child(mode: str, inputs: Path, dest: Path, journal: Path, kill_after: float | None) -> int:
    process = subprocess.Popen([sys.executable, "-c", _CHILD, mode, str(inputs), str(dest), str(journal)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
    if kill_after is not None:
        time.sleep(kill_after)
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=120)
    return process.returncode


def _each_file_whole_somewhere(files: dict[Path, bytes], inputs: Path, dest: Path) -> None:
    for path, data in files.items():
        places = [p for p in (path, dest / path.relative_to(inputs)) if p.exists()]
        assert places, f"{path} is neither at its place nor in the destination"
        for place in places:
            assert place.read_bytes() == data, f"{place} is not byte-exact"


@pytest.mark.slow
def test_kill_9_during_a_cross_file_system_move_and_its_undo(tmp_path):
    rng = random.Random(7)
    with _tmpfs(tmp_path / "fs", "256m") as mount:
        inputs, dest, journal = mount / "inputs", tmp_path / "dest", tmp_path / "m.jsonl.journal.jsonl"
        files = _make_inputs(inputs, count=24, size=1_500_000, seed=3)
        assert os.stat(inputs).st_dev != os.stat(tmp_path).st_dev
        before = _snapshot(inputs)
        for _ in range(10):
            _run_child("move", inputs, dest, journal, kill_after=rng.uniform(0.0, 0.15))
            _each_file_whole_somewhere(files, inputs, dest)
        assert _run_child("move", inputs, dest, journal, kill_after=None) == 0
        assert not any(path.exists() for path in files) and not _leftover_temps(inputs, dest)
        _each_file_whole_somewhere(files, inputs, dest)
        for _ in range(20):
            _run_child("undo", inputs, dest, journal, kill_after=rng.uniform(0.0, 0.1))
            _each_file_whole_somewhere(files, inputs, dest)
        assert _run_child("undo", inputs, dest, journal, kill_after=None) == 0
        assert _snapshot(inputs) == before
        assert not any(dest.iterdir()) and not _leftover_temps(inputs, dest)


def test_a_next_run_keeps_a_last_journal_line_that_only_lacks_its_newline(tmp_path, world):
    inputs, files, dest, journal = world
    before = _snapshot(inputs)
    _act("move", inputs, files, dest, journal)
    journal.write_bytes(journal.read_bytes()[:-1])
    more = tmp_path / "more"
    others = _make_inputs(more, count=2, seed=1)
    later = _snapshot(more)
    _act("move", more, others, tmp_path / "dest2", journal)
    assert "undone: 6; already as before: 0; refused: 0" in _undo(journal, expect=0)
    assert _snapshot(inputs) == before and _snapshot(more) == later
