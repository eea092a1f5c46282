"""Content fingerprints of model weights, used to key caches so models never share vectors."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch


def tensors_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]], *, extra: str = "") -> str:
    """Return a sha256 hex digest of tensor names, dtypes, shapes and bytes, plus ``extra``.

    Two towers get the same fingerprint only when every weight is bit-identical, so any fine-tuning
    step or different checkpoint changes it.
    """
    digest = hashlib.sha256(extra.encode())
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """Return the sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
