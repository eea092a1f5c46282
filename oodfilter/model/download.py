"""Catalogue weights on first use: download once, verify, convert to a bundle once, reuse offline.

``ensure_catalogue_bundle("clipn-vitb16")`` returns the entry's bundle folder in the cache. When it is
already there, nothing touches the network: the bundle's origin is checked against the trusted sha256
(:mod:`oodfilter.model.trust`) and :func:`~oodfilter.model.bundle.load_bundle` checks its files. Otherwise
the checkpoint is downloaded with gdown (it lists Google Drive folders, passes Drive's confirmation and
quota pages, resumes a dropped transfer, and fetches plain http(s) URLs too) into a private temporary
folder, verified, converted with strict keys and ``weights_only=True``, and only then moved into place;
a partial, corrupt or refused download is deleted, never used. Offline (``HF_HUB_OFFLINE=1``), a missing
entry fails at once with the URL to fetch by hand and the ``oodfilter convert-clipn`` command.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import gdown
import requests

from oodfilter.cache_dir import default_cache_dir
from oodfilter.errors import CheckpointError, InputError, ModelDownloadError
from oodfilter.model.bundle import load_bundle
from oodfilter.model.catalogue import CatalogueEntry, require_catalogue_entry
from oodfilter.model.clipn import CLIPN
from oodfilter.model.convert import convert_reference_checkpoint
from oodfilter.model.manifest import BUNDLE_MANIFEST, read_manifest
from oodfilter.model.trust import check_trusted, read_trust_record, write_trust_record

logger = logging.getLogger(__name__)

OFFLINE_ENV = "HF_HUB_OFFLINE"
_TRUE = {"1", "on", "yes", "true"}
_TIMEOUT = (10.0, 60.0)  # seconds to connect, and between bytes
_RETRIES = 2  # gdown resumes a dropped transfer with a byte range this many times
_CHECKPOINT_SUFFIXES = (".pt", ".pth")
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")


def is_offline() -> bool:
    """Whether downloads are switched off (``HF_HUB_OFFLINE`` set to 1, on, yes or true)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def load_catalogue_model(name: str, *, cache_dir: str | Path | None = None) -> CLIPN:
    """Load the catalogue model ``name``, downloading and converting it on first use.

    Raises:
        ModelDownloadError: it is not cached and cannot be downloaded now, or the download is refused.
        CheckpointError: the cached bundle or the download fails its integrity checks.

    """
    return load_bundle(ensure_catalogue_bundle(name, cache_dir=cache_dir))


def ensure_catalogue_bundle(name: str, *, cache_dir: str | Path | None = None, quiet: bool | None = None) -> Path:
    """Return the bundle folder of catalogue entry ``name``, downloading and converting it on first use.

    Args:
        name: A catalogue name or alias (``clipn-vitb16``); see ``oodfilter models``.
        cache_dir: Cache root (default ``$OODFILTER_CACHE_DIR`` or the user's cache folder).
        quiet: No progress bar (default: quiet unless stderr is a terminal).

    Raises:
        ModelDownloadError: ``name`` is not in the catalogue, or its bundle is not cached and the
            download is switched off, fails, or gives a file that is not the checkpoint.
        CheckpointError: the file or the cached bundle differs from the trusted sha256.

    """
    entry = require_catalogue_entry(name)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder, bundle = entry.folder(root), entry.bundle_dir(root)
    if not (bundle / BUNDLE_MANIFEST).is_file():
        if is_offline():
            raise ModelDownloadError(
                f"{entry.name} is not in the cache yet ({bundle}) and {OFFLINE_ENV} is set, so nothing is "
                f"downloaded. {manual_steps(entry, root)}"
            )
        _fetch_and_convert(entry, root, not sys.stderr.isatty() if quiet is None else quiet)
    check_cached_bundle(entry, folder, bundle)
    return bundle


def check_cached_bundle(entry: CatalogueEntry, folder: Path, bundle: Path) -> None:
    """Check that ``bundle`` was converted from the trusted checkpoint of ``entry`` (trusting it if first).

    Raises:
        CheckpointError: the bundle was not converted from a reference checkpoint of the entry's
            architecture, or from a file whose sha256 is not the trusted one.

    """
    origin = read_manifest(bundle).source
    sha256 = origin["details"].get("sha256")
    if origin["kind"] != "reference-checkpoint" or not isinstance(sha256, str) or origin["name"] != entry.architecture:
        raise CheckpointError(
            f"{bundle} is not a conversion of a {entry.architecture} reference checkpoint; delete the folder "
            f"and run 'oodfilter download {entry.name}'"
        )
    check_trusted(entry, folder, sha256, f"the cached bundle {bundle} (its checkpoint)")
    if entry.sha256 is None and read_trust_record(folder) is None:  # converted by hand: trust on first use
        write_trust_record(entry, folder, url="converted by hand", sha256=sha256, size=None)


def manual_steps(entry: CatalogueEntry, root: Path) -> str:
    """How to install ``entry`` without oodfilter's download: the URL and the conversion command."""
    where = (f"the file {entry.file} from the Google Drive folder {entry.url}" if entry.url_kind == "drive-folder"
             else f"{entry.file} from {entry.url}")
    arch = "" if entry.architecture == "ViT-B-16" else f" --arch {shlex.quote(entry.architecture)}"
    command = f"oodfilter convert-clipn {shlex.quote(entry.file)} {shlex.quote(str(entry.bundle_dir(root)))}{arch}"
    return (
        f"To install it by hand, download {where} and convert it once: {command} . Or run "
        f"'oodfilter download {entry.name}' on a machine with network and copy {entry.folder(root)} here."
    )


def _fetch_and_convert(entry: CatalogueEntry, root: Path, quiet: bool) -> None:
    folder, bundle = entry.folder(root), entry.bundle_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        checkpoint, sha256 = _download(entry, root, staging / entry.file, quiet)
        _check_download(entry, root, checkpoint, sha256)
        if not (bundle / BUNDLE_MANIFEST).is_file():  # another process may have finished meanwhile
            _convert(entry, root, checkpoint, bundle)
        if entry.sha256 is None and read_trust_record(folder) is None:
            write_trust_record(entry, folder, url=entry.url, sha256=sha256, size=checkpoint.stat().st_size)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(entry: CatalogueEntry, root: Path, target: Path, quiet: bool) -> tuple[Path, str]:
    """Download the checkpoint to ``target`` (gdown writes a ``.part`` beside it first) → (path, sha256)."""
    digest = hashlib.sha256()
    try:
        url = _file_url(entry)
        logger.info("downloading %s from %s to %s", entry.name, url, target)
        gdown.download(url=url, output=str(target), quiet=quiet, use_cookies=False, hasher=digest,
                       timeout=_TIMEOUT, retries=_RETRIES)
    except gdown.exceptions.FileURLRetrievalError as error:
        raise ModelDownloadError(
            f"Google Drive refused to hand out {entry.name} ({_first_line(error)}): usually its download quota "
            "('too many users have viewed or downloaded this file'; try again later) or a changed link "
            f"permission. {manual_steps(entry, root)}"
        ) from error
    except (requests.RequestException, gdown.exceptions.DownloadError, OSError) as error:
        raise ModelDownloadError(
            f"{entry.name} could not be downloaded from {entry.url} ({type(error).__name__}: {_first_line(error)}); "
            f"nothing was kept. {manual_steps(entry, root)}"
        ) from error
    if not target.is_file():
        raise ModelDownloadError(f"the download of {entry.name} left no file; {manual_steps(entry, root)}")
    return target, digest.hexdigest()


def _file_url(entry: CatalogueEntry) -> str:
    """Return the checkpoint's own URL: ``entry.url``, or the file named ``entry.file`` inside its Drive folder."""
    if entry.url_kind == "file":
        return entry.url
    listing: Any = gdown.download_folder(url=entry.url, skip_download=True, quiet=True, use_cookies=False,
                                         timeout=_TIMEOUT)
    by_name = [item for item in listing if Path(item.path).name == entry.file]
    if not by_name:  # the folder's layout may differ from the expected name: accept a lone checkpoint
        by_name = [item for item in listing if Path(item.path).suffix in _CHECKPOINT_SUFFIXES]
    if len(by_name) != 1:
        found = ", ".join(sorted(str(item.path) for item in listing)) or "nothing"
        raise gdown.exceptions.DownloadError(
            f"the folder holds {found}; expected one checkpoint named {entry.file}"
        )
    return f"https://drive.google.com/uc?id={by_name[0].id}"


def _check_download(entry: CatalogueEntry, root: Path, path: Path, sha256: str) -> None:
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise ModelDownloadError(
            f"the file downloaded for {entry.name} is {size} bytes, the catalogue says {entry.size}: it is "
            "incomplete or not the published file, and was deleted"
        )
    with open(path, "rb") as handle:
        head = handle.read(2048).lstrip().lower()
    if head.startswith(b"<") or any(marker in head for marker in _HTML_MARKERS):
        raise ModelDownloadError(
            f"the server sent a web page instead of the checkpoint of {entry.name} (Google Drive's quota or "
            f"sign-in page); it was deleted. Try again later. {manual_steps(entry, root)}"
        )
    check_trusted(entry, entry.folder(root), sha256, f"the file downloaded from {entry.url}")


def _convert(entry: CatalogueEntry, root: Path, checkpoint: Path, bundle: Path) -> None:
    try:
        convert_reference_checkpoint(checkpoint, bundle, architecture=entry.architecture)
    except InputError:
        if not (bundle / BUNDLE_MANIFEST).is_file():
            raise
        # another process converted it meanwhile; check_cached_bundle checks that one
    except CheckpointError as error:
        raise ModelDownloadError(
            f"the file downloaded for {entry.name} is not a usable {entry.architecture} CLIPN checkpoint, and was "
            f"deleted: {error}. {manual_steps(entry, root)}"
        ) from error


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
