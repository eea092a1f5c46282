"""Issue 28, cases 4-7 and presigned URLs: manifest paths, remote deadlines and size caps, bounded messages.

Servers run on 127.0.0.1 only; the deadline and the size cap are lowered through their environment knobs so
each stalled or flooding server is given up on within seconds.
"""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from oodfilter.cli.main import EXIT_USAGE, cli, main
from oodfilter.config import build_config
from oodfilter.data.discovery import discover_images
from oodfilter.data.remote import RemoteReadError, SourceUnavailableError, read_bytes
from oodfilter.data.shards import shard_index
from oodfilter.errors import InputError
from oodfilter.evaluate.config import EvalConfig
from oodfilter.evaluate.runner import evaluate
from oodfilter.pipeline.manifest_filter import ManifestFilter
from oodfilter.report import ReportConfig, write_report
from oodfilter.scan import ScanConfig, scan
from oodfilter.scan.decisions import calibration_paths
from oodfilter.sinks.manifest import ManifestWriter, read_manifest, sidecar
from oodfilter.sinks.rows import ManifestRow

pytest.importorskip("aiohttp", reason="the HTTP tests need aiohttp (the remote extra)")
from servers import flood_server, http_server, trickle_server

CLASSES = ["tench", "goldfish", "hen"]
THUMBNAIL = "data:image/jpeg;base64,"


def _images(folder: Path, names: list[str], seed: int) -> None:
    """Write one small noise image per name; the seed decides their colours."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        base = rng.integers(0, 255, 3)
        pixels = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)


def _scan(tmp_path: Path, inputs: list[str], out: Path, tiny_model, **options) -> None:
    scan(ScanConfig(inputs=inputs, classes=CLASSES, out=str(out), workers=0, batch_size=4,
                    cache_dir=str(tmp_path / "cache"), **options), model=tiny_model)


# ---- case 4: a manifest's relative paths resolve from where the scan ran, never from here ------------------

@pytest.fixture
def two_folders(tmp_path, monkeypatch):
    """``scanned/`` holds id/ and ood/ images; ``elsewhere/`` holds files of the same names, swapped."""
    scanned, elsewhere = tmp_path / "scanned", tmp_path / "elsewhere"
    ids, oods = [f"i{n}.png" for n in range(6)], [f"o{n}.png" for n in range(6)]
    _images(scanned / "id", ids, seed=1)
    _images(scanned / "ood", oods, seed=2)
    _images(elsewhere / "id", ids, seed=2)  # the same names, the other set's pictures
    _images(elsewhere / "ood", oods, seed=1)
    return scanned, elsewhere


@pytest.mark.slow  # two evaluations / two CLI scans of the tiny model: several seconds on 2 cores
def test_eval_resolves_a_manifests_relative_paths_from_its_scan_folder(tmp_path, two_folders, tiny_model,
                                                                       monkeypatch):
    scanned, elsewhere = two_folders
    for name in ("id", "ood"):  # what a scan run in scanned/ on id/ and ood/ records: relative rows and its cwd
        writer = ManifestWriter(scanned / f"{name}.jsonl", append=False)
        writer.write([ManifestRow(f"{name}/{file.name}", "ok", ood_score=0.5, top_class="hen")
                      for file in sorted((scanned / name).iterdir())])
        writer.close()
        sidecar(scanned / f"{name}.jsonl", "meta.json").write_text(json.dumps({"cwd": str(scanned)}))

    def auroc(id_set: Path, ood_set: Path) -> float:
        config = EvalConfig(model="test-tiny", classes=CLASSES, id=str(id_set), ood=[str(ood_set)], methods=["msp"],
                            cache_dir=str(tmp_path / "cache"), plots=False)
        return next(iter(evaluate(config, model=tiny_model).results["msp"].values()))["auroc"]

    truth = auroc(scanned / "id", scanned / "ood")
    assert abs(truth - 0.5) > 0.05  # the swapped files would give another AUROC
    monkeypatch.chdir(elsewhere)
    assert auroc(scanned / "id.jsonl", scanned / "ood.jsonl") == pytest.approx(truth)


def test_report_from_another_folder_shows_the_scanned_images(tmp_path, two_folders, tiny_model, monkeypatch):
    scanned, elsewhere = two_folders
    monkeypatch.chdir(scanned)
    _scan(tmp_path, ["id", "ood"], scanned / "m.jsonl", tiny_model)
    at_home = write_report(scanned / "m.jsonl", tmp_path / "home.html", ReportConfig(per_gallery=3)).read_text()
    shutil.rmtree(elsewhere)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    away = write_report(scanned / "m.jsonl", tmp_path / "away.html", ReportConfig(per_gallery=3)).read_text()
    assert away.count(THUMBNAIL) == at_home.count(THUMBNAIL) > 0


def test_a_manifest_without_a_recorded_folder_resolves_from_its_own_folder(tmp_path, monkeypatch):
    folder = tmp_path / "listing"
    _images(folder / "x", ["a.png", "b.png"], seed=3)
    writer = ManifestWriter(folder / "m.jsonl", append=False)  # written by hand: no meta.json
    writer.write([ManifestRow("x/a.png", "ok", ood_score=0.9, is_ood=True, top_class="hen", top_prob=0.5),
                  ManifestRow("x/b.png", "ok", ood_score=0.1, is_ood=False, top_class="hen", top_prob=0.5)])
    writer.close()
    monkeypatch.chdir(tmp_path)
    mask = ManifestFilter(folder / "m.jsonl").drop_mask([folder / "x" / "a.png", folder / "x" / "b.png"])
    assert mask.tolist() == [True, False]


def test_urls_and_absolute_paths_in_a_manifest_are_kept_as_they_are(tmp_path, monkeypatch):
    manifest = tmp_path / "known.jsonl"
    writer = ManifestWriter(manifest, append=False)
    url = "s3://bucket/photos/a.jpg"
    writer.write([ManifestRow(name, "ok", ood_score=0.1, top_class="hen") for name in (url, "rel/b.png", "/abs/c.png")])
    writer.close()
    sidecar(manifest, "meta.json").write_text(json.dumps({"cwd": "/scan/folder"}))
    monkeypatch.chdir(tmp_path)
    assert calibration_paths([str(manifest)]) == sorted([url, "/scan/folder/rel/b.png", "/abs/c.png"])


def test_resuming_from_another_folder_is_refused_when_rows_are_relative(tmp_path, two_folders, tiny_model,
                                                                         monkeypatch):
    scanned, elsewhere = two_folders
    monkeypatch.chdir(scanned)
    out = tmp_path / "m.jsonl"
    _scan(tmp_path, ["id"], out, tiny_model)
    monkeypatch.chdir(elsewhere)  # id/i0.png here is another file than the row id/i0.png
    with pytest.raises(InputError, match=f"relative to {scanned}"):
        _scan(tmp_path, ["id"], out, tiny_model, resume=True)
    assert json.loads(sidecar(out, "meta.json").read_text())["cwd"] == str(scanned)


# ---- case 5: every remote read has an overall deadline ----------------------------------------------------

@pytest.fixture
def short_deadline(monkeypatch):
    monkeypatch.setenv("OODFILTER_REMOTE_DEADLINE", "1")


def test_a_trickling_listing_stops_the_scan_at_the_deadline(tmp_path, short_deadline):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    with trickle_server() as base:
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["scan", f"{base}/photos/", "--model", "test-tiny", "--classes",
                                          str(classes), "--out", str(tmp_path / "m.jsonl"), "--workers", "0"])
        elapsed = time.monotonic() - started
    assert elapsed < 4, f"the listing took {elapsed:.1f} s"
    assert isinstance(result.exception, InputError)
    assert "within 1 s" in str(result.exception) and "OODFILTER_REMOTE_DEADLINE" in str(result.exception)


def test_a_trickling_object_stops_at_the_deadline(short_deadline):
    with trickle_server() as base:
        started = time.monotonic()
        with pytest.raises(SourceUnavailableError, match="within 1 s"):
            read_bytes(f"{base}/a.jpg")
        assert time.monotonic() - started < 4


def test_a_trickling_shard_index_stops_at_the_deadline(short_deadline):
    with trickle_server(size=1 << 20) as base:
        started = time.monotonic()
        with pytest.raises(InputError, match="within 1 s"):
            shard_index(f"{base}/trickle.tar")
        assert time.monotonic() - started < 4


def test_a_bad_deadline_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OODFILTER_REMOTE_DEADLINE", "soon")
    with pytest.raises(InputError, match="OODFILTER_REMOTE_DEADLINE"):
        read_bytes("http://127.0.0.1:9/a.jpg")


# ---- case 6: the size cap applies while streaming, stated or not ------------------------------------------

CAP = 1 << 20


@pytest.fixture
def small_cap(monkeypatch):
    monkeypatch.setenv("OODFILTER_REMOTE_MAX_BYTES", str(CAP))


def _peak_bytes(action) -> int:
    """Run ``action`` twice; return the most memory Python held during the second run, above what it held before.

    The first run imports and sets up what any first request needs (aiohttp, fsspec's event loop).
    """
    action()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_a_listing_without_content_length_stops_at_the_cap(small_cap):
    with flood_server(48 << 20) as base:

        def listing() -> None:
            with pytest.raises(InputError, match=f"larger than the limit of {CAP} bytes"):
                discover_images([f"{base}/photos/"])

        assert _peak_bytes(listing) < 3 * CAP


def test_an_object_without_content_length_stops_at_the_cap(small_cap):
    with flood_server(48 << 20) as base:

        def fetch() -> None:
            with pytest.raises(RemoteReadError, match=f"larger than the limit of {CAP} bytes"):
                read_bytes(f"{base}/a.jpg")

        assert _peak_bytes(fetch) < 3 * CAP


# ---- case 7: bounded excerpts in messages; YAML aliases past a limit are refused -------------------------

def _alias_bomb(levels: int) -> str:
    """A billion-laughs document under the known key batch_size: ``9 ** levels`` strings once expanded."""
    parts = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    parts += [f"&l{level} [{', '.join([f'*l{level - 1}'] * 9)}]" for level in range(1, levels)]
    return "batch_size: [" + ",\n  ".join(parts) + "]\n"


def test_a_yaml_alias_bomb_is_refused_with_a_short_message(tmp_path):
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb(6))  # 9**6 strings once expanded (the had 9**9)
    assert len(config.read_text()) < 500
    with pytest.raises(InputError) as refused:
        build_config(ScanConfig, config)
    message = str(refused.value)
    assert len(message) < 500 and str(config) in message and "alias" in message


def test_a_config_may_use_a_few_aliases(tmp_path):
    config = tmp_path / "aliases.yaml"
    config.write_text("include: &pats ['*.png', '*.jpg']\nexclude: *pats\nbatch_size: &n 8\nworkers: *n\n")
    loaded = build_config(ScanConfig, config)
    assert (loaded.include, loaded.exclude, loaded.batch_size, loaded.workers) == (["*.png", "*.jpg"],) * 2 + (8, 8)


def test_a_huge_wrong_value_is_quoted_as_a_short_excerpt(tmp_path):
    config = tmp_path / "big.yaml"
    config.write_text("batch_size: " + json.dumps(["x" * 1000] * 1000) + "\n")
    with pytest.raises(InputError, match="batch_size must be a whole number") as refused:
        build_config(ScanConfig, config)
    assert len(str(refused.value)) < 500
    manifest = tmp_path / "m.jsonl"
    writer = ManifestWriter(manifest, append=False)
    writer.write([ManifestRow("a.png", "ok", ood_score=0.5, is_ood=False, top_class="hen")])
    writer.close()
    sidecar(manifest, "meta.json").write_text(json.dumps({"method": ["y" * 1000] * 1000}))
    with pytest.raises(InputError, match="key 'method'") as refused:
        ManifestFilter(manifest)
    assert len(str(refused.value)) < 500


# ---- presigned URLs: their signatures never appear in messages -------------------------------------------

SIGNED = "X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=5ecret5ig&X-Amz-Security-Token=t0ken"


def test_a_presigned_urls_signature_is_redacted_in_messages(tmp_path):
    (tmp_path / "served").mkdir()
    with http_server(tmp_path / "served") as base:
        with pytest.raises(RemoteReadError) as missing:
            read_bytes(f"{base}/gone.jpg?{SIGNED}")
        with pytest.raises(InputError) as unlisted:
            discover_images([f"{base}/gone.jpg?X-Goog-Signature=5ecret5ig&sig=5ecret5ig"])
    for error in (missing.value, unlisted.value):
        assert "5ecret5ig" not in str(error) and "t0ken" not in str(error) and "gone.jpg" in str(error)
    port = base.rsplit(":", 1)[1]
    with pytest.raises(SourceUnavailableError) as down:  # nothing listens there any more
        read_bytes(f"http://127.0.0.1:{port}/a.jpg?Signature=5ecret5ig&Expires=1")
    assert "5ecret5ig" not in str(down.value) and "Expires=1" in str(down.value)


@pytest.mark.slow  # two evaluations / two CLI scans of the tiny model: several seconds on 2 cores
def test_the_cli_and_the_report_redact_signatures_and_the_manifest_keeps_the_url(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    served = tmp_path / "served"
    _images(served, ["a.png"], seed=4)
    out = tmp_path / "m.jsonl"
    args = ["scan", "--model", "test-tiny", "--classes", str(classes), "--workers", "0", "--cache-dir",
            str(tmp_path / "cache")]
    with http_server(served) as base:
        main([*args, f"{base}/a.png?{SIGNED}", "--out", str(out)])
        page = write_report(out, tmp_path / "r.html").read_text()
        with pytest.raises(SystemExit) as stopped:
            main([*args, f"{base}/gone.png?{SIGNED}", "--out", str(tmp_path / "n.jsonl")])
    printed = capsys.readouterr().err
    assert stopped.value.code == EXIT_USAGE and "gone.png" in printed
    assert read_manifest(out)[0].path == f"{base}/a.png?{SIGNED}"  # the manifest names the input it read
    assert THUMBNAIL in page and "a.png" in page
    for text in (printed, page):
        assert "5ecret5ig" not in text and "t0ken" not in text
