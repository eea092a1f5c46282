"""Content fingerprints of model weights, used to key caches so models never share vectors."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

from oodfilter.model.file_digest import file_sha256

__all__ = ["file_sha256", "tensors_fingerprint"]  # file_sha256 moved to a torch-free module; still importable here


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
