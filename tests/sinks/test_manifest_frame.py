"""`oodfilter.read_manifest`: manifests as pandas DataFrames and pyarrow Tables (issue 30, item 4)."""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import oodfilter
from oodfilter.errors import InputError, MissingDependencyError
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks import manifest as manifest_module
from oodfilter.sinks.manifest import rewrite_manifest
from oodfilter.sinks.manifest_frame import DOCUMENTED

ODD = os.fsdecode(b"caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8, as a name from an old camera


@pytest.fixture(scope="module")
def manifests(tmp_path_factory, real_images, awkward_images, tiny_model) -> dict[str, Path]:
    """One scan (real photos, a name that is not UTF-8, unreadable files) in each manifest format."""
    root = tmp_path_factory.mktemp("frames")
    folder = root / "images"
    folder.mkdir()
    for path in real_images[:10]:
        shutil.copy(path, folder / path.name)
    shutil.copy(real_images[10], folder / ODD)
    for name in ("zero.jpg", "text.jpg"):
        shutil.copy(awkward_images[0] / name, folder / name)
    jsonl = root / "scan.jsonl"
    scan(ScanConfig(inputs=[str(folder)], classes=["tench", "goldfish", "hen"], model="test-tiny", out=str(jsonl),
                    workers=0, templates="photo", cache_dir=str(root / "cache"), device="cpu", method="mcm",
                    keep_fraction=0.5), model=tiny_model)
    rows = manifest_module.read_manifest(jsonl)
    found = {".jsonl": jsonl}
    for suffix in (".csv", ".parquet"):  # the same rows through each format's own writer
        found[suffix] = rewrite_manifest(root / f"scan{suffix}", rows)
    return found


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_pandas_frame_has_the_documented_columns_and_types(manifests, suffix):
    frame = oodfilter.read_manifest(manifests[suffix])
    rows = manifest_module.read_manifest(manifests[".jsonl"])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(DOCUMENTED) and len(frame) == len(rows)
    assert str(frame["ood_score"].dtype) == "float64" and str(frame["top_prob"].dtype) == "float64"
    assert str(frame["is_ood"].dtype) == "boolean" and frame["path"].dtype == object
    assert list(frame["path"]) == [row.path for row in rows]
    for row, record in zip(rows, frame.itertuples(index=False), strict=True):
        assert record.status == row.status
        if row.ok:
            assert record.ood_score == row.ood_score and bool(record.is_ood) is row.is_ood
            assert record.top_class == row.top_class
        else:
            assert math.isnan(record.ood_score) and record.is_ood is pd.NA and record.error == row.error
    assert {True, False} <= set(frame["is_ood"].dropna())
    odd = frame[frame["path"].str.endswith(ODD)]["path"].item()  # the name as os.listdir gives it: it opens
    assert os.path.exists(odd)


def test_the_three_formats_give_the_same_frame(manifests):
    frames = [oodfilter.read_manifest(manifests[suffix]) for suffix in (".jsonl", ".csv", ".parquet")]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_arrow_table_keeps_a_name_that_is_not_utf8_as_its_bytes(manifests, suffix):
    table = oodfilter.read_manifest(manifests[suffix], as_="arrow")
    assert isinstance(table, pa.Table) and table.column_names == list(DOCUMENTED)
    assert table.schema.field("path").type == pa.binary()  # as in a Parquet manifest: the name's bytes
    assert table.schema.field("top_class").type == pa.string()
    assert table.schema.field("ood_score").type == pa.float64() and table.schema.field("is_ood").type == pa.bool_()
    paths = table.column("path").to_pylist()
    assert any(path.endswith(os.fsencode(ODD)) for path in paths)
    assert table.column("is_ood").null_count == table.column("status").to_pylist().count("error") == 2


def test_rows_form_and_refusals(manifests, monkeypatch):
    assert oodfilter.read_manifest(manifests[".csv"], as_="rows") == manifest_module.read_manifest(manifests[".jsonl"])
    with pytest.raises(InputError, match="choose one of"):
        oodfilter.read_manifest(manifests[".jsonl"], as_="polars")
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'oodfilter\[pandas\]' \(pandas\)"):
        oodfilter.read_manifest(manifests[".jsonl"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"read_manifest\(as_='arrow'\) needs pyarrow"):
        oodfilter.read_manifest(manifests[".jsonl"], as_="arrow")


@pytest.mark.parametrize("as_", ["pandas", "arrow", "rows"])
def test_a_path_that_is_no_manifest_is_the_cli_s_error_not_an_empty_frame(tmp_path, as_):
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "garbage.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "garbage.csv").write_bytes(b"\x00\xff\xfe")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    for name in ("missing.jsonl", "folder.jsonl"):
        with pytest.raises(InputError, match=f"manifest {tmp_path / name} does not exist"):
            oodfilter.read_manifest(tmp_path / name, as_=as_)
    for name in ("garbage.jsonl", "garbage.csv", "empty.jsonl"):
        with pytest.raises(InputError, match=f"manifest {tmp_path / name} (has no rows|line 1 is not valid JSON)"):
            oodfilter.read_manifest(tmp_path / name, as_=as_)


def test_a_parquet_scan_still_running_reads_from_its_journal(tmp_path, manifests):
    rows = manifest_module.read_manifest(manifests[".jsonl"])
    out = tmp_path / "running.parquet"
    writer = manifest_module.ManifestWriter(out, append=False)
    writer.write(rows[:3])  # not closed: the rows are in the journal only
    try:
        assert oodfilter.read_manifest(out, as_="rows") == rows[:3]
    finally:
        writer.abort()
