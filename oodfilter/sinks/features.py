"""Stored image embeddings beside a manifest: pay for the image encoder once, rescore in seconds.

``<out>.features.f16`` holds one L2-normalised image embedding per ``ok`` row of the manifest, in the
manifest's row order, as raw little-endian float16 (N, D); ``<out>.features.json`` says what they are
(dimension, dtype, the image tower's fingerprint, the model). Raw rows rather than ``.npy``: a batch is
appended and fsync'd *before* its manifest rows, so after a crash the file holds at least as many rows
as the manifest has ok rows, and a resume cuts it back to exactly that many; ``.npy`` cannot be appended
without rewriting its header. The file is memory-mapped for reading, so rescoring millions of rows
streams. float16 costs 2·D bytes per image (1 KiB for D = 512) and moves a score by ~1e-4 at most.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodfilter.atomic import atomic_write_text
from oodfilter.errors import InputError
from oodfilter.outputs import os_error
from oodfilter.sinks.manifest import sidecar

FORMAT = "oodfilter-features/1"
DTYPE = np.dtype("<f2")


@dataclass(frozen=True)
class FeatureHeader:
    """What a feature file holds.

    Attributes:
        dim: Embedding dimension D.
        image_fingerprint: The image tower's fingerprint (weights and preprocessing).
        model: The model's name (what ``rescore`` loads by default).
        data: The raw float16 file (absolute; a rescored manifest points at its source's).
        pretrained: The model's pretrained tag or weights file, if any.

    """

    dim: int
    image_fingerprint: str
    model: str
    data: str
    pretrained: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the header as JSON-ready data."""
        return {"format": FORMAT, "dtype": "float16", "dim": self.dim, "image_fingerprint": self.image_fingerprint,
                "model": self.model, "pretrained": self.pretrained, "data": self.data}


def header_path(manifest: str | Path) -> Path:
    """Return the path of a manifest's feature header (``<out>.features.json``)."""
    return sidecar(manifest, "features.json")


def data_path(manifest: str | Path) -> Path:
    """Return the path of a manifest's own feature rows (``<out>.features.f16``)."""
    return sidecar(manifest, "features.f16")


def read_header(manifest: str | Path) -> FeatureHeader:
    """Read and validate a manifest's feature header.

    Raises:
        InputError: no header (the scan did not store features), or a damaged one.

    """
    path = header_path(manifest)
    if not path.is_file():
        raise InputError(f"{manifest} has no stored image features ({path.name} is missing): scan with "
                         "--save-features to store them")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("dtype") != "float16":
        raise InputError(f"{path} is not an oodfilter feature header (expected format '{FORMAT}', float16)")
    dim, fingerprint, model, raw = data.get("dim"), data.get("image_fingerprint"), data.get("model"), data.get("data")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or not all(
            isinstance(v, str) for v in (fingerprint, model, raw)):
        raise InputError(f"{path}: 'dim' must be a positive integer and 'image_fingerprint', 'model', 'data' strings")
    pretrained = data.get("pretrained")
    if pretrained is not None and not isinstance(pretrained, str):
        raise InputError(f"{path}: 'pretrained' must be a string or null")
    return FeatureHeader(dim, str(fingerprint), str(model), str(raw), pretrained)


def load_features(manifest: str | Path, rows: int) -> np.ndarray:
    """Memory-map the (rows, D) float16 features of a manifest with ``rows`` ok rows.

    Raises:
        InputError: no or a damaged header, or a data file with fewer rows than the manifest's ok rows.

    """
    header = read_header(manifest)
    path = Path(header.data)
    size = path.stat().st_size if path.is_file() else -1
    if size < rows * header.dim * DTYPE.itemsize:
        held = max(0, size) // (header.dim * DTYPE.itemsize)
        raise InputError(f"{path} holds features for {held} rows but {manifest} has {rows} ok rows; scan again with "
                         "--save-features (--resume completes an interrupted scan)")
    if rows == 0:
        return np.zeros((0, header.dim), dtype=DTYPE)
    return np.memmap(path, dtype=DTYPE, mode="r", shape=(rows, header.dim))


class FeatureWriter:
    """Appends each batch's features to ``<out>.features.f16`` before its rows reach the manifest.

    Args:
        manifest: The manifest the features belong to.
        dim: Embedding dimension D.
        image_fingerprint: The image tower's fingerprint.
        model: The model's name.
        pretrained: The model's pretrained tag or weights file, if any.
        keep_rows: On resume, the number of ok rows the manifest already has: the file is cut to exactly
            that many (a crash may have left one batch more); None starts a new file.

    Raises:
        InputError: resuming features of another image tower, or fewer stored rows than the manifest has.

    """

    def __init__(self, manifest: str | Path, dim: int, image_fingerprint: str, model: str,
                 keep_rows: int | None, pretrained: str | None = None) -> None:
        self.path = data_path(manifest)
        self.dim = dim
        row_bytes = dim * DTYPE.itemsize
        if keep_rows is not None:
            previous = read_header(manifest)
            if previous.image_fingerprint != image_fingerprint or previous.dim != dim:
                raise InputError(f"cannot resume {manifest}: its stored features come from another image tower; "
                                 "--overwrite (or another --out) to scan again")
            size = self.path.stat().st_size if self.path.is_file() else 0
            if size < keep_rows * row_bytes:
                raise InputError(f"cannot resume {manifest}: {self.path.name} holds fewer features than the manifest "
                                 "has ok rows; --overwrite (or another --out) to scan again")
        header = FeatureHeader(dim, image_fingerprint, model, str(self.path.resolve()), pretrained)
        atomic_write_text(header_path(manifest), json.dumps(header.to_dict(), indent=1))
        try:
            self._handle = open(self.path, "r+b" if keep_rows is not None else "wb")  # noqa: SIM115
            self._handle.truncate((keep_rows or 0) * row_bytes)
            self._handle.seek(0, os.SEEK_END)
        except OSError as error:
            raise os_error("open the feature file", self.path, error) from error

    def write(self, features: torch.Tensor) -> None:
        """Append (n, D) features (as float16) and flush them to disk."""
        data = features.detach().to("cpu", torch.float16).numpy().astype(DTYPE, copy=False)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"features must be (n, {self.dim}), got {tuple(data.shape)}")
        try:
            self._handle.write(data.tobytes())
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise os_error("write the feature file", self.path, error) from error

    def close(self) -> None:
        """Close the file."""
        self._handle.close()
