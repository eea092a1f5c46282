"""Reading a manifest back, streamed: the rows, the paths a resume skips, the tally of a scan's files."""

from __future__ import annotations

import json

import pytest

from oodfilter.errors import InputError
from oodfilter.sinks import readback
from oodfilter.sinks.manifest import iter_manifest, read_manifest
from oodfilter.sinks.rows import ManifestRow


def _write(path, rows, tail=b""):
    path.write_bytes(b"".join(json.dumps(r.to_dict()).encode() + b"\n" for r in rows) + tail)
    return path


ROWS = [ManifestRow("/a.jpg", "ok", ood_score=0.9, is_ood=True, top_class="cat", top_prob=0.6),
        ManifestRow("/b.jpg", "ok", ood_score=0.1, is_ood=False, top_class="cat", top_prob=0.7),
        ManifestRow("/c.jpg", "error", error="broken"),
        ManifestRow("/d.jpg", "ok", ood_score=0.8, is_ood=True, top_class="dog", top_prob=0.5)]


def test_streamed_rows_equal_the_listed_ones_and_a_torn_tail_is_left_out(tmp_path):
    manifest = _write(tmp_path / "m.jsonl", ROWS, tail=b'{"path": "/torn')
    assert list(iter_manifest(manifest)) == read_manifest(manifest) == ROWS


def test_a_bad_line_is_an_error_naming_it_when_it_is_reached(tmp_path):
    manifest = _write(tmp_path / "m.jsonl", ROWS[:2], tail=b"not json\n")
    rows = iter_manifest(manifest)
    assert next(rows) == ROWS[0] and next(rows) == ROWS[1]
    with pytest.raises(InputError, match="line 3 is not valid JSON"):
        next(rows)


def test_done_paths_and_ok_count(tmp_path):
    manifest = _write(tmp_path / "m.jsonl", ROWS)
    assert readback.done_paths(manifest) == {"/a.jpg", "/b.jpg", "/c.jpg", "/d.jpg"}
    assert readback.ok_row_count(manifest) == 3
    assert readback.done_paths(tmp_path / "none.jsonl") == set()


def test_the_tally_counts_only_this_scans_files_and_collects_the_selected_paths(tmp_path):
    repeated = ManifestRow("/a.jpg", "ok", ood_score=0.0, is_ood=False, top_class="cat", top_prob=0.9)
    manifest = _write(tmp_path / "m.jsonl", [*ROWS, repeated, ManifestRow("/other.jpg", "ok", ood_score=0.99,
                                                                           is_ood=True, top_class="x", top_prob=1)])
    tally = readback.tally_manifest(manifest, ["/a.jpg", "/b.jpg", "/c.jpg", "/d.jpg", "/missing.jpg"],
                                    select_ood=True)
    assert (tally.total, tally.ok, tally.errors, tally.ood, tally.in_distribution) == (4, 3, 1, 2, 1)
    assert tally.selected == {"/a.jpg", "/d.jpg"}  # a path's first row counts
    assert [(r.name, r.images, r.flagged) for r in tally.per_class] == [("cat", 2, 1), ("dog", 1, 1)]
    kept = readback.tally_manifest(manifest, ["/a.jpg", "/b.jpg"], select_ood=False)
    assert kept.selected == {"/b.jpg"} and readback.tally_manifest(manifest, ["/b.jpg"]).selected == set()


def test_a_last_row_without_its_newline_is_read_like_any_other(tmp_path, recwarn):
    data = b"".join(json.dumps(r.to_dict()).encode() + b"\n" for r in ROWS).removesuffix(b"\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(data)
    assert read_manifest(manifest) == list(iter_manifest(manifest)) == ROWS
    assert readback.done_paths(manifest) == {"/a.jpg", "/b.jpg", "/c.jpg", "/d.jpg"}
    assert not [w for w in recwarn if "incomplete" in str(w.message)]


def test_a_torn_last_line_is_reported_naming_the_file(tmp_path):
    manifest = _write(tmp_path / "m.jsonl", ROWS, tail=b'{"path": "/torn')
    with pytest.warns(UserWarning, match=r"m\.jsonl: its last line \(line 5\) is incomplete.*interrupted write.*"
                                         r"not read"):
        assert read_manifest(manifest) == ROWS


def test_a_resume_keeps_a_last_row_without_its_newline_and_cuts_a_torn_one(tmp_path):
    from oodfilter.sinks.manifest import ManifestWriter

    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(json.dumps(ROWS[0].to_dict()).encode())
    writer = ManifestWriter(manifest, append=True)
    writer.write([ROWS[1]])
    writer.close()
    assert read_manifest(manifest) == ROWS[:2]
    with open(manifest, "ab") as handle:
        handle.write(b'{"path": "/c.jp')
    writer = ManifestWriter(manifest, append=True)
    writer.write([ROWS[2]])
    writer.close()
    assert read_manifest(manifest) == ROWS[:3]


def test_a_csv_manifest_with_a_utf8_byte_order_mark_is_read(tmp_path):
    import csv

    from oodfilter.sinks.rows import COLUMNS

    manifest = tmp_path / "m.csv"
    with open(manifest, "w", encoding="utf-8-sig", newline="") as handle:  # as a spreadsheet saves "CSV UTF-8"
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.to_dict().items()} for row in ROWS])
    assert manifest.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_manifest(manifest) == ROWS


def test_a_csv_record_without_its_newline_is_reported_not_silently_dropped(tmp_path):
    from oodfilter.sinks.manifest import ManifestWriter

    manifest = tmp_path / "m.csv"
    writer = ManifestWriter(manifest, append=False)
    writer.write(ROWS)
    writer.close()
    manifest.write_bytes(manifest.read_bytes().rstrip(b"\r\n"))
    with pytest.warns(UserWarning, match=r"m\.csv: its last record \(record 5, or its end\) is incomplete.*not read"):
        assert read_manifest(manifest) == ROWS[:3]
