"""Device and precision resolution.

``auto`` is bf16 (fp16 on older GPUs) on CUDA and fp32 on the CPU. On a CPU with native bf16 (avx512_bf16
or AMX) ``--precision bf16`` is an opt-in: it scanned 3.3x faster than fp32 here, but it moved 1.2-2.7% of
the decisions on the benchmark world (an EfficientNet image tower; features down to 0.969 cosine from
fp32) and 0.6-1.6% at the median score of a ViT-B-32 (``benchmarks/precision.py``), more than the 0.5%
a default may move. ``int8`` moved 0.3-0.9% there. Training keeps fp32 on every CPU.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from oodfilter.config import PRECISIONS
from oodfilter.errors import InputError

# CPU flags (as Linux's /proc/cpuinfo names them) that execute bf16 matrix products natively.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU executes bf16 matrix products in hardware (avx512_bf16 or AMX-BF16).

    Asks PyTorch's own CPU detection when it has it, else reads the CPU flags (Linux); never guesses from
    the vendor. Without either answer, False (fp32 is always correct, only slower).
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except RuntimeError:  # pragma: no cover - a build without the probe's backend
                continue
    return bool(_cpuinfo_flags() & NATIVE_BF16_FLAGS)


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """Return the CPU flags Linux reports (empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return set()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def runnable_precision(device: torch.device, precision: str | None) -> str:
    """Return ``precision`` if ``device`` can score in it, else fp32 (None, unknown: ``auto``).

    For work recorded in one precision and continued elsewhere, e.g. rescoring on a CPU the features a
    GPU stored in fp16 (its class vectors are then encoded in fp32).
    """
    if precision is None:
        return inference_precision(device, "auto")
    try:
        return inference_precision(device, precision)
    except InputError:
        return "fp32"


def inference_precision(device: torch.device, precision: str = "auto", *, warn: bool = True) -> str:
    """Return the precision scoring runs in on ``device``: ``fp32``, ``bf16``, ``fp16`` or ``int8``.

    ``auto``: bf16 on CUDA devices that support it, else fp16; fp32 on the CPU and other devices (see the
    module's note for why bf16 is an opt-in there). ``bf16`` on a CPU without native bf16
    (:func:`cpu_has_native_bf16`) is emulated, slower than fp32, and warned about. ``int8`` (dynamic
    quantisation of the image tower's linear layers) runs on the CPU only; ``fp16`` on CUDA only. ``warn``:
    whether to warn about emulated bf16 (once per process; text encoding does not).

    Raises:
        InputError: an unknown precision, or one the device cannot run.

    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and device.type != "cpu":
        raise InputError(f"--precision int8 (dynamic quantisation) runs on the CPU only, not on {device}; "
                         "use --precision auto (bf16/fp16 autocast) there")
    if precision == "fp16" and device.type == "cpu":
        raise InputError("--precision fp16 runs on CUDA only: on the CPU use fp32 (auto), or bf16 on a CPU "
                         "with native bf16")
    if warn and precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        _warn_emulated_bf16()
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@functools.cache
def _warn_emulated_bf16() -> None:
    """Warn, once per process (eval builds a scorer per method), that this CPU only emulates bf16."""
    warnings.warn("--precision bf16 on a CPU without native bf16 (avx512_bf16 or AMX) is emulated and slower than "
                  "fp32; use --precision auto (fp32)", stacklevel=4)


def precision_dtype(precision: str) -> torch.dtype | None:
    """Return the autocast dtype of a resolved precision (None: no autocast, for fp32 and int8)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


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

    This is the training rule: ``auto`` uses bf16 on CUDA devices that support it, fp16 on other CUDA
    devices, fp32 on the CPU. Scoring uses :func:`inference_precision`.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        raise InputError("--precision int8 is for scoring only; train with auto, fp32, bf16 or fp16")
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
