"""The decision rule a scan asks for, and the calibration images it names: read before any model loads.

What the user asked for (a threshold, a keep fraction, a calibration file, ``--id-recall`` on
``--calibrate-on`` images) is compared when a scan resumes, and a calibration file that cannot be read or
``--calibrate-on`` images that are not there must fail before the model loads and the class vectors are
encoded. This module needs no torch; fitting the calibration is :mod:`oodfilter.scan.decisions`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from oodfilter.data.discovery import discover_images
from oodfilter.data.remote import is_url
from oodfilter.errors import InputError
from oodfilter.model.file_digest import file_sha256
from oodfilter.scan.config import ScanConfig
from oodfilter.sinks.manifest import FORMATS, read_manifest, sidecar
from oodfilter.sinks.row_paths import resolved_paths


def decision_rule(config: ScanConfig, previous_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return what the user asked for as the decision rule, compared on resume (cheap: nothing is scored).

    A resumed ``--id-recall`` scan whose ``--calibrate-on`` images are gone keeps the rule (and the stored
    calibration) it was made with, with a warning: the threshold its rows were decided with is on disk.

    Raises:
        InputError: ``--calibrate-on`` names no image, or ``--calibration`` cannot be read.

    """
    if config.keep_fraction is not None:
        return {"keep_fraction": config.keep_fraction}
    if config.calibration:
        try:
            return {"calibration_sha256": file_sha256(config.calibration)}
        except OSError as error:
            raise InputError(f"calibration file {config.calibration} cannot be read: {error}") from None
    if config.id_recall is not None:
        try:
            digest = _files_digest(calibration_paths(config.calibrate_on))
        except InputError:
            previous = (previous_meta or {}).get("decision_rule") or {}
            if previous.get("id_recall") != config.id_recall or not sidecar(config.out, "calibration.json").is_file():
                raise
            warnings.warn(f"the --calibrate-on images are gone; resuming {config.out} with the calibration it was "
                          "made with (stored beside it)", stacklevel=3)
            return dict(previous)
        return {"id_recall": config.id_recall, "calibrate_on_sha256": digest}
    return {"threshold": config.threshold}


def calibration_paths(items: list[str]) -> list[str]:
    """Return the image files of ``--calibrate-on``: files, folders and globs, or an oodfilter manifest's ok rows.

    Raises:
        InputError: nothing given, or no image found.

    """
    if not items:
        raise InputError("--id-recall needs --calibrate-on ID_IMAGES: a folder, glob or manifest of images you "
                         "know are in-distribution (unlabelled)")
    paths: list[str] = []
    images: list[str] = []
    for item in items:
        if Path(item).suffix.lower() in FORMATS and sidecar(item, "meta.json").is_file():
            paths += resolved_paths(item, (row for row in read_manifest(item) if row.ok))
        else:
            images.append(item)
    if images:
        paths += [found.name for found in discover_images(images) if found.error is None]
    if not paths:
        raise InputError(f"--calibrate-on {' '.join(items)}: no image found to calibrate on")
    return sorted({path if is_url(path) else os.path.normpath(os.path.abspath(path)) for path in paths})


def _files_digest(paths: list[str]) -> str:
    """sha256 over the calibration files' paths, sizes and modification times (not their bytes)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = Path(path).stat()
            digest.update(json.dumps([path, stat.st_size, stat.st_mtime_ns]).encode())
        except OSError:
            digest.update(json.dumps([path, None]).encode())
    return digest.hexdigest()
