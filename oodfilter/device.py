"""Device and precision resolution."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from oodfilter.errors import InputError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``: ``auto`` picks CUDA when present, else the CPU.

    Raises:
        InputError: ``cuda`` was asked for on a machine without a usable CUDA device.

    """
    if isinstance(device, torch.device):
        return device
    spec = (device or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device '{device}' was requested but no CUDA device is available; use --device cpu")
    try:
        return torch.device(spec)
    except RuntimeError as error:
        raise InputError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from error


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Return the autocast dtype for ``precision`` on ``device`` (``None`` means full fp32).

    ``auto`` uses bf16 on CUDA devices that support it, fp16 on other CUDA devices, fp32 on the CPU.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@contextlib.contextmanager
def maybe_autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Enter ``torch.autocast`` for ``dtype`` on ``device``, or do nothing when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
