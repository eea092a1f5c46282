"""URL inputs through fsspec, against servers started on 127.0.0.1: an S3-compatible store (moto) and HTTP."""

from __future__ import annotations

import shutil
import time

import pytest
from click.testing import CliRunner

from oodfilter.cli.main import EXIT_USAGE, cli, main
from oodfilter.data.decode import ImageDecodeError, load_rgb_image
from oodfilter.data.discovery import discover_images
from oodfilter.data.remote import SourceUnavailableError
from oodfilter.errors import InputError
from oodfilter.evaluate.config import EvalConfig
from oodfilter.evaluate.runner import evaluate
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest
from oodfilter.train.data import read_caption_source

pytest.importorskip("s3fs", reason="the S3 tests need s3fs (the dev extra)")
pytest.importorskip("moto", reason="the S3 tests need moto's server (the dev extra)")
from servers import http_server, s3_server, upload
from shard_data import write_shards

CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


@pytest.fixture
def photos(tmp_path, real_images):
    """A folder of real photos plus one corrupt file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for index, image in enumerate(real_images[:10]):
        shutil.copy(image, folder / ("sub" if index % 3 == 0 else ".") / image.name)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return folder


def _config(tmp_path, inputs, out, **kw) -> ScanConfig:
    kw.setdefault("workers", 0)
    return ScanConfig(inputs=[str(i) for i in inputs], classes=CLASSES, out=str(tmp_path / out), batch_size=4,
                      cache_dir=str(tmp_path / "cache"), **kw)


def _assert_same_rows(remote_rows, local_rows, to_local) -> None:
    local = {row.path: row for row in local_rows}
    assert len(remote_rows) == len(local)
    for row in remote_rows:
        expected = local[to_local(row.path)]
        assert (row.status, row.is_ood, row.top_class) == (expected.status, expected.is_ood, expected.top_class)
        assert (row.ood_score is None and expected.ood_score is None) or row.ood_score == pytest.approx(
            expected.ood_score, abs=1e-6)
        assert (row.error is None) == (expected.error is None)


def test_an_s3_bucket_scans_like_the_same_files_on_disk(tmp_path, photos, tiny_model):
    scan(_config(tmp_path, [photos], "local.jsonl"), model=tiny_model)
    with s3_server():
        upload(photos, "s3://bucket/photos")
        summary = scan(_config(tmp_path, ["s3://bucket/photos/"], "s3.jsonl"), model=tiny_model)
        assert summary.total == 11 and summary.errors == 1
        rows = read_manifest(tmp_path / "s3.jsonl")
        assert all(row.path.startswith("s3://bucket/photos/") for row in rows)
        _assert_same_rows(rows, read_manifest(tmp_path / "local.jsonl"),
                          lambda url: str(photos / url.removeprefix("s3://bucket/photos/")))
        scan(_config(tmp_path, ["s3://bucket/photos/"], "s3-workers.jsonl", workers=2), model=tiny_model)
        assert read_manifest(tmp_path / "s3-workers.jsonl") == rows  # decoding processes read from S3 too
        globbed = discover_images(["s3://bucket/photos/sub/*.JPEG"], include=["*tench*"])
        assert [item.name for item in globbed] == [row.path for row in rows if "/sub/" in row.path
                                                   and "tench" in row.path]


def test_a_server_that_dies_mid_scan_stops_it_clearly_and_resume_completes_it(tmp_path, photos, tiny_model):
    config = _config(tmp_path, ["s3://bucket/photos/"], "m.jsonl")
    with s3_server() as server:
        upload(photos, "s3://bucket/photos")
        port = int(server.endpoint.rsplit(":", 1)[1])

        def stop_after_the_first_batch(done: int, total: int) -> None:
            if done and server._server is not None:
                server.stop()

        with pytest.raises(SourceUnavailableError, match=r"did not answer.*--resume"):
            scan(config, model=tiny_model, progress=stop_after_the_first_batch)
    first = read_manifest(tmp_path / "m.jsonl")  # the rows of the first batch stayed
    assert 0 < len(first) < 11 and all(row.status == "ok" or row.path.endswith("broken.jpg") for row in first)
    with s3_server(port):  # moto keeps its objects in this process: the same bucket is back
        config.resume = True
        resumed = scan(config, model=tiny_model)
    rows = read_manifest(tmp_path / "m.jsonl")
    assert resumed.total == 11 and len(rows) == 11 and len({row.path for row in rows}) == 11
    assert sum(row.status == "error" for row in rows) == 1


def test_http_urls_scan_like_files_and_a_missing_object_is_its_error_row(tmp_path, photos, tiny_model):
    scan(_config(tmp_path, [photos], "local.jsonl"), model=tiny_model)
    names = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*") if p.is_file())
    with http_server(photos) as base:
        summary = scan(_config(tmp_path, [f"{base}/{name}" for name in names], "http.jsonl"), model=tiny_model)
        assert summary.total == 11
        _assert_same_rows(read_manifest(tmp_path / "http.jsonl"), read_manifest(tmp_path / "local.jsonl"),
                          lambda url: str(photos / url.removeprefix(f"{base}/")))
        gone = names[0]
        (photos / gone).unlink()  # listed, then deleted before it is read: the server says 404
        with pytest.raises(ImageDecodeError, match="not found at its server"):
            load_rgb_image(f"{base}/{gone}")
        with pytest.raises(InputError, match="does not exist"):
            discover_images([f"{base}/{gone}"])


def test_remote_inputs_refuse_file_actions_and_urls_with_passwords(tmp_path, tiny_model):
    for url in ("https://user:s3cret@127.0.0.1:9/a.jpg", "http://ghp_s3cret@127.0.0.1:9/a.jpg"):
        with pytest.raises(InputError, match="carries credentials") as refused:
            discover_images([url])
        assert "s3cret" not in str(refused.value)
    with pytest.raises(InputError, match="carries credentials"):  # finetune data too: it is kept in the bundle
        read_caption_source("memory://user:s3cret@bucket/shard-{000..001}.tar")
    with s3_server():
        images = tmp_path / "img"
        images.mkdir()
        (images / "a.png").write_bytes(b"whatever: refused before it is read")
        upload(images, "s3://bucket/img")
        with pytest.raises(InputError, match="works on local image files only"):
            scan(_config(tmp_path, ["s3://bucket/img/"], "m.jsonl", action="copy", dest=str(tmp_path / "d"),
                         threshold=0.5), model=tiny_model)
        assert not (tmp_path / "m.jsonl").exists()


def test_cli_scans_a_bucket_and_names_the_fix_when_the_store_is_down(tmp_path, photos, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    args = ["scan", "s3://bucket/photos/", "--model", "test-tiny", "--classes", str(classes), "--workers", "0",
            "--out", str(tmp_path / "m.jsonl"), "--cache-dir", str(tmp_path / "cache")]
    with s3_server():
        upload(photos, "s3://bucket/photos")
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert len(read_manifest(tmp_path / "m.jsonl")) == 11
    with pytest.raises(SystemExit) as stopped:  # no server any more, nor its endpoint and credentials
        main([*args, "--overwrite"])
    printed = capsys.readouterr().err
    assert stopped.value.code == EXIT_USAGE and "Traceback" not in printed
    assert "Error: cannot list s3://bucket/photos/" in printed and "credentials" in printed


def test_eval_reads_a_bucket_and_shards_like_local_folders(tmp_path, real_images, tiny_model):
    id_folder, ood_folder = tmp_path / "id", tmp_path / "ood"
    for folder, images in ((id_folder, real_images[:8]), (ood_folder, real_images[-8:])):
        folder.mkdir()
        for image in images:
            shutil.copy(image, folder / image.name)
    shards = write_shards(tmp_path / "shards", real_images[-8:], per_shard=8)

    def run(id_set: str, ood_set: str):
        config = EvalConfig(model="test-tiny", classes=CLASSES, id=id_set, ood=[ood_set], methods=["mcm", "atd"],
                            cache_dir=str(tmp_path / "cache"), plots=False)
        return evaluate(config, model=tiny_model)

    local = run(str(id_folder), str(ood_folder))
    with s3_server():
        upload(id_folder, "s3://bucket/id")
        remote = run("s3://bucket/id/", str(shards[0]))
    for method in ("mcm", "atd"):
        expected = next(iter(local.results[method].values()))
        got = next(iter(remote.results[method].values()))
        assert got == pytest.approx(expected, abs=1e-6), method


def test_shards_in_a_bucket_scan_like_local_shards(tmp_path, real_images, tiny_model):
    shards = write_shards(tmp_path / "shards", real_images[:10], per_shard=5)
    scan(_config(tmp_path, [str(tmp_path / "shards" / "*.tar")], "local.jsonl"), model=tiny_model)
    with s3_server():
        upload(tmp_path / "shards", "s3://bucket/shards")
        summary = scan(_config(tmp_path, ["s3://bucket/shards/shard-{000..001}.tar"], "s3.jsonl"), model=tiny_model)
    assert summary.ok == 10
    _assert_same_rows(read_manifest(tmp_path / "s3.jsonl"), read_manifest(tmp_path / "local.jsonl"),
                      lambda name: str(shards[0].parent / name.removeprefix("s3://bucket/shards/")))


def test_a_report_of_a_bucket_scan_is_written_when_the_server_is_gone(tmp_path, photos, tiny_model):
    from oodfilter.report import ReportConfig, write_report

    with s3_server() as server:
        upload(photos, "s3://bucket/photos")
        scan(_config(tmp_path, ["s3://bucket/photos/"], "m.jsonl", threshold=0.9), model=tiny_model)
        with_thumbnails = write_report(tmp_path / "m.jsonl", tmp_path / "up.html", ReportConfig(per_gallery=2))
        assert "data:image/jpeg;base64," in with_thumbnails.read_text()
        server.stop()  # the store is down: thumbnails fail (one wait, not one per image), the page does not
        start = time.perf_counter()
        page = write_report(tmp_path / "m.jsonl", tmp_path / "down.html", ReportConfig(per_gallery=2)).read_text()
        assert time.perf_counter() - start < 30
    assert "data:image/jpeg;base64," not in page and "s3://bucket/photos/" in page
    page = write_report(tmp_path / "m.jsonl", tmp_path / "gone.html", ReportConfig(per_gallery=2)).read_text()
    assert "data:image/jpeg;base64," not in page  # no endpoint nor credentials at all: placeholders again


def test_an_http_server_that_is_down_stops_the_scan_and_a_query_string_url_is_read(tmp_path, photos, tiny_model):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(SourceUnavailableError, match="did not answer"):
        load_rgb_image(f"http://127.0.0.1:{closed}/a.jpg")
    name = sorted(p.name for p in photos.iterdir() if p.suffix == ".JPEG")[0]
    with http_server(photos) as base:
        summary = scan(_config(tmp_path, [f"{base}/{name}?X-Signature=abc"], "q.jsonl"), model=tiny_model)
        assert summary.total == summary.ok == 1
        shards = write_shards(tmp_path / "shards", sorted(photos.glob("*.JPEG"))[:2], per_shard=2)
        shutil.copy(shards[0], photos / "s.tar")
        with pytest.raises(InputError, match="byte-range requests"):  # python's http.server has no Range support
            read_sample_image_from(f"{base}/s.tar#000000")


def read_sample_image_from(name: str) -> bytes:
    from oodfilter.data.shards import read_sample_image

    return read_sample_image(name)
