"""Keep a fraction of a scan (DataComp-style): the F most in-distribution images, the rest OOD."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from oodfilter.errors import InputError

if TYPE_CHECKING:
    import torch


def keep_fraction_decisions(scores: torch.Tensor, keep_fraction: float) -> tuple[torch.Tensor, float | None]:
    """Decide which of ``scores`` (N,) to keep so that exactly ``round(F N)`` are kept.

    The lowest scores are kept; ties at the boundary are broken by position (earlier kept first), so the
    count is exact and the same scores in the same order always give the same decisions (the rule of
    :func:`keep_fraction_flags`, which needs no torch).

    Args:
        scores: (N,) OOD scores, higher = more OOD.
        keep_fraction: F in (0, 1].

    Returns:
        (N,) bool ``is_ood`` and the highest kept score (None when nothing is kept).

    Raises:
        InputError: F outside (0, 1].

    """
    import torch  # here, not at the top: oodfilter.decision is imported by reports, which run without torch

    flags, boundary = keep_fraction_flags(scores.detach().to("cpu", torch.float64).reshape(-1).numpy(), keep_fraction)
    return torch.from_numpy(flags), boundary


def keep_fraction_flags(scores: Sequence[float] | np.ndarray, keep_fraction: float) -> tuple[np.ndarray, float | None]:
    """Decide which of ``scores`` (N,) to keep, as :func:`keep_fraction_decisions` does, without torch.

    Returns:
        (N,) bool ``is_ood`` (a numpy array) and the highest kept score (None when nothing is kept).

    Raises:
        InputError: F outside (0, 1].

    """
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, int | float) or not 0.0 < keep_fraction <= 1.0:
        raise InputError(f"--keep-fraction must be in (0, 1] (0.7 keeps the 70% most in-distribution images), "
                         f"got {keep_fraction}")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)  # (N,)
    count = values.size
    kept = min(count, math.floor(keep_fraction * count + 0.5))
    order = np.argsort(values, kind="stable")  # (N,)
    is_ood = np.ones(count, dtype=bool)
    is_ood[order[:kept]] = False
    boundary = float(values[order[kept - 1]]) if kept > 0 else None
    return is_ood, boundary
