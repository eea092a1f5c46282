"""The sha256 of a file, read in chunks: bundle manifests, checkpoints and calibrations are keyed by it.

Torch-free, so that reading a bundle manifest (``oodfilter models``) does not import torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """Return the sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
