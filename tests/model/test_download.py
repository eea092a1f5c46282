"""Catalogue models on first use: download (from a local server), verify, convert once, reuse offline.

No test touches the network: a server on 127.0.0.1 serves a reference-layout checkpoint built from the
tiny model, truncated or corrupt copies of it, and a fake Google Drive quota page; a test catalogue
(``$OODFILTER_CATALOGUE``) points an entry at it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gdown
import pytest
import torch
from click.testing import CliRunner
from reference_checkpoint import _reference_layout_checkpoint

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.errors import CheckpointError, InputError, ModelDownloadError
from oodfilter.model import download
from oodfilter.model.catalogue import CATALOGUE_ENV, load_catalogue
from oodfilter.model.download import ensure_catalogue_bundle
from oodfilter.model.trust import TRUST_RECORD, read_trust_record

NAME = "test-clipn"
QUOTA_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
              b"<p class=\"uc-error-subcaption\">Too many users have viewed or downloaded this file recently.</p>"
              b"</body></html>")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]`` = (body, content type, bytes to actually send or None)."""

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path)  # type: ignore[attr-defined]
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        if route is None:
            self.send_error(404)
            return
        body, content_type, cut = route
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 with mutable routes; stopped at the end (or earlier by a test)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}  # type: ignore[attr-defined]
    httpd.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def checkpoint_bytes(tiny_model, tmp_path_factory):
    """A reference-layout checkpoint of the tiny model, as bytes."""
    path = _reference_layout_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "clipn.pt")
    return path.read_bytes()


@pytest.fixture
def other_checkpoint_bytes(tiny_model, tmp_path):
    """A valid checkpoint whose no-prompts differ: a different file for the same entry."""
    state_model = oodfilter.load_model("test-tiny", device="cpu")
    with torch.no_grad():
        state_model.no_tower.prompts.add_(1.0)
    return _reference_layout_checkpoint(state_model, tmp_path / "other.pt").read_bytes()


@pytest.fixture
def online(monkeypatch, tmp_path, server):
    """Downloads allowed, a test catalogue whose entry points at the local server; returns the cache root."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(download, "_RETRIES", 0)  # a refused connection fails at once, without back-off
    port = server.server_address[1]
    catalogue = {
        "format": "oodfilter-catalogue", "format_version": 1, "aliases": {"test-default": NAME},
        "models": {NAME: {"description": "tiny test checkpoint", "architecture": "test-tiny",
                          "url": f"http://127.0.0.1:{port}/clipn.pt", "url_kind": "file", "file": "clipn.pt",
                          "size": None, "sha256": None}},
    }
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(catalogue))
    monkeypatch.setenv(CATALOGUE_ENV, str(path))
    return tmp_path / "cache"


def _serve(server, body, content_type="application/octet-stream", cut=None):
    server.routes["/clipn.pt"] = (body, content_type, cut)


def _entry_folder(cache: Path) -> Path:
    return cache / "models" / NAME


def _leftovers(cache: Path) -> list[str]:
    folder = _entry_folder(cache)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_first_use_downloads_verifies_converts_and_records(online, server, checkpoint_bytes, tiny_model):
    _serve(server, checkpoint_bytes)
    bundle = ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    assert bundle == _entry_folder(online) / "bundle"
    assert _leftovers(online) == ["bundle", TRUST_RECORD]  # the checkpoint and temp folder are gone
    record = read_trust_record(_entry_folder(online))
    assert record.sha256 == hashlib.sha256(checkpoint_bytes).hexdigest()
    assert record.size == len(checkpoint_bytes) and record.url.endswith("/clipn.pt")
    model = oodfilter.load_model("test-default", cache_dir=online, device="cpu")  # the alias, from the cache
    assert model.no_branch_trained
    assert model.text_fingerprint("no") == tiny_model.text_fingerprint("no")
    assert server.hits == ["/clipn.pt"]


def test_cached_model_loads_with_the_server_gone_and_offline(online, server, checkpoint_bytes, monkeypatch):
    _serve(server, checkpoint_bytes)
    ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    server.shutdown()
    server.server_close()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = oodfilter.load_model(NAME, cache_dir=online, device="cpu")
    assert model.no_branch_trained and server.hits == ["/clipn.pt"]


def test_partial_download_is_refused_and_nothing_is_kept(online, server, checkpoint_bytes):
    _serve(server, checkpoint_bytes, cut=len(checkpoint_bytes) // 2)
    with pytest.raises(ModelDownloadError, match=r"could not be downloaded .*incomplete") as error:
        ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    assert "oodfilter convert-clipn clipn.pt" in str(error.value)
    assert _leftovers(online) == []


def test_corrupt_download_is_refused_and_never_trusted(online, server, checkpoint_bytes):
    _serve(server, bytes(reversed(checkpoint_bytes)))
    with pytest.raises(ModelDownloadError, match="not a usable test-tiny CLIPN checkpoint, and was deleted"):
        ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    assert _leftovers(online) == []
    _serve(server, checkpoint_bytes)  # a good file afterwards is trusted: the bad one was never recorded
    ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    assert read_trust_record(_entry_folder(online)).sha256 == hashlib.sha256(checkpoint_bytes).hexdigest()


def test_quota_page_is_refused_with_the_manual_steps(online, server):
    _serve(server, QUOTA_PAGE, content_type="text/html; charset=utf-8")
    with pytest.raises(ModelDownloadError, match="web page instead of the checkpoint") as error:
        ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    message = str(error.value)
    assert f"http://127.0.0.1:{server.server_address[1]}/clipn.pt" in message
    assert f"oodfilter convert-clipn clipn.pt {_entry_folder(online) / 'bundle'} --arch test-tiny" in message
    assert _leftovers(online) == []


def test_a_changed_file_after_first_use_is_refused(online, server, checkpoint_bytes, other_checkpoint_bytes):
    _serve(server, checkpoint_bytes)
    bundle = ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    trusted = read_trust_record(_entry_folder(online)).sha256
    for path in sorted(bundle.rglob("*"), reverse=True):  # the user deletes the bundle; the record stays
        path.unlink() if path.is_file() else path.rmdir()
    bundle.rmdir()
    _serve(server, other_checkpoint_bytes)
    with pytest.raises(CheckpointError, match=f"pinned to {trusted}"):
        ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    assert _leftovers(online) == [TRUST_RECORD]


def test_bundle_converted_by_hand_is_trusted_once_then_held_to_it(online, tmp_path, checkpoint_bytes,
                                                                   other_checkpoint_bytes, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hand = tmp_path / "clipn.pt"
    hand.write_bytes(checkpoint_bytes)
    bundle = _entry_folder(online) / "bundle"
    oodfilter.convert_reference_checkpoint(hand, bundle, architecture="test-tiny")  # the manual steps
    assert oodfilter.load_model(NAME, cache_dir=online, device="cpu").no_branch_trained
    record = read_trust_record(_entry_folder(online))
    assert record.url == "converted by hand" and record.sha256 == hashlib.sha256(checkpoint_bytes).hexdigest()
    hand.write_bytes(other_checkpoint_bytes)
    oodfilter.convert_reference_checkpoint(hand, bundle, architecture="test-tiny", overwrite=True)
    with pytest.raises(CheckpointError, match=r"cached bundle .* pinned to"):
        oodfilter.load_model(NAME, cache_dir=online, device="cpu")


def test_published_sha256_and_size_are_enforced(online, server, checkpoint_bytes, tmp_path):
    path = tmp_path / "catalogue.json"
    catalogue = json.loads(path.read_text())
    catalogue["models"][NAME]["sha256"] = "0" * 64
    path.write_text(json.dumps(catalogue))
    _serve(server, checkpoint_bytes)
    with pytest.raises(CheckpointError, match="from the catalogue"):
        ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    catalogue["models"][NAME]["sha256"] = None
    catalogue["models"][NAME]["size"] = len(checkpoint_bytes) + 1
    path.write_text(json.dumps(catalogue))
    with pytest.raises(ModelDownloadError, match="the catalogue says"):
        ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    assert _leftovers(online) == []


def test_unreachable_server_gives_the_manual_steps(online, server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(ModelDownloadError, match=r"could not be downloaded .*ConnectionError") as error:
        ensure_catalogue_bundle(NAME, cache_dir=online, quiet=True)
    assert f"download clipn.pt from http://127.0.0.1:{port}/clipn.pt and convert it once" in str(error.value)


def test_offline_fails_at_once_naming_the_url_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(CATALOGUE_ENV, raising=False)
    start = time.perf_counter()
    with pytest.raises(ModelDownloadError) as error:
        oodfilter.load_model("clipn-vitb16", cache_dir=tmp_path, device="cpu")
    assert time.perf_counter() - start < 0.5
    message = str(error.value)
    bundle = tmp_path / "models" / "clipn-vitb16-repeat3" / "bundle"
    assert message.startswith(f"clipn-vitb16-repeat3 is not in the cache yet ({bundle}) and HF_HUB_OFFLINE is set")
    assert "download the file epoch_10.pt from the Google Drive folder " \
           "https://drive.google.com/drive/folders/1qF4Pm1JSL3P0H4losPSmvldubFj91dew" in message
    assert f"oodfilter convert-clipn epoch_10.pt {bundle} ." in message  # ViT-B-16 needs no --arch
    assert "oodfilter download clipn-vitb16-repeat3" in message
    assert not (tmp_path / "models").exists()


def test_builtin_catalogue_holds_the_three_reference_repeats(monkeypatch):
    monkeypatch.delenv(CATALOGUE_ENV, raising=False)
    catalogue = load_catalogue()
    assert sorted(catalogue.entries) == [f"clipn-vitb16-repeat{i}" for i in (1, 2, 3)]
    assert catalogue.get("clipn-vitb16") is catalogue.entries["clipn-vitb16-repeat3"]
    folders = {entry.url for entry in catalogue.entries.values()}
    assert len(folders) == 3 and all(url.startswith("https://drive.google.com/drive/folders/") for url in folders)
    assert all(e.architecture == "ViT-B-16" and e.url_kind == "drive-folder" for e in catalogue.entries.values())


def test_malformed_user_catalogue_is_named(tmp_path, monkeypatch):
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"format": "oodfilter-catalogue", "format_version": 1,
                                "models": {"x": {"architecture": "ViT-B-16"}}}))
    monkeypatch.setenv(CATALOGUE_ENV, str(path))
    with pytest.raises(InputError, match=f"{path}: entry 'x' must be an object with exactly the keys"):
        load_catalogue()


def test_download_command_then_models_lists_it_as_cached(online, server, checkpoint_bytes):
    _serve(server, checkpoint_bytes)
    runner = CliRunner()
    before = runner.invoke(cli, ["models", "--cache-dir", str(online)])
    assert before.exit_code == 0, before.output
    bundle = _entry_folder(online) / "bundle"
    assert f"{NAME}  test-tiny  not cached: {bundle}" in before.output
    assert "test-default -> test-clipn" in before.output and "trusted on first download" in before.output
    result = runner.invoke(cli, ["download", "test-default", "--cache-dir", str(online)])
    assert result.exit_code == 0, result.output
    assert f"test-default is ready: {bundle}" in result.output
    after = runner.invoke(cli, ["models", "--cache-dir", str(online)])
    sha256 = hashlib.sha256(checkpoint_bytes).hexdigest()
    assert f"{NAME}  test-tiny  cached: {bundle}" in after.output
    assert f"sha256 {sha256[:16]}... from {_entry_folder(online) / TRUST_RECORD}, recorded on first use" in after.output
    assert runner.invoke(cli, ["download", NAME, "--cache-dir", str(online)]).exit_code == 0  # cached: checked only
    assert server.hits == ["/clipn.pt"]


@pytest.mark.parametrize(("paths", "chosen"), [
    (["logs/out.log", "checkpoints/epoch_9.pt", "checkpoints/epoch_10.pt"], "checkpoints/epoch_10.pt"),
    (["out.log", "CLIPN_repeat3.pt"], "CLIPN_repeat3.pt"),  # another name, but the only checkpoint
    (["a.pt", "b.pt"], None),
    ([], None),
])
def test_drive_folder_file_is_chosen_by_name(monkeypatch, paths, chosen):
    listing = [SimpleNamespace(id=f"id-{path}", path=path, local_path=path) for path in paths]  # gdown's listing
    monkeypatch.setattr(download.gdown, "download_folder", lambda **kwargs: listing)
    entry = load_catalogue().get("clipn-vitb16")
    if chosen is None:
        with pytest.raises(gdown.exceptions.DownloadError, match=r"expected one checkpoint named epoch_10\.pt"):
            download._file_url(entry)
    else:
        assert download._file_url(entry) == f"https://drive.google.com/uc?id=id-{chosen}"
