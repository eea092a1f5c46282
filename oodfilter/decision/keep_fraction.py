"""Keep a fraction of a scan (DataComp-style): the F most in-distribution images, the rest OOD."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from oodfilter.errors import InputError

if TYPE_CHECKING:
    import torch


def keep_fraction_decisions(scores: torch.Tensor, keep_fraction: float) -> tuple[torch.Tensor, float | None]:
    """Decide which of ``scores`` (N,) to keep so that exactly ``round(F N)`` are kept.

    The lowest scores are kept; ties at the boundary are broken by position (earlier kept first), so the
    count is exact and the same scores in the same order always give the same decisions.

    Args:
        scores: (N,) OOD scores, higher = more OOD.
        keep_fraction: F in (0, 1].

    Returns:
        (N,) bool ``is_ood`` and the highest kept score (None when nothing is kept).

    Raises:
        InputError: F outside (0, 1].

    """
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, int | float) or not 0.0 < keep_fraction <= 1.0:
        raise InputError(f"--keep-fraction must be in (0, 1] (0.7 keeps the 70% most in-distribution images), "
                         f"got {keep_fraction}")
    import torch  # here, not at the top: oodfilter.decision is imported by reports, which run without torch

    count = scores.numel()
    kept = min(count, math.floor(keep_fraction * count + 0.5))
    order = torch.sort(scores.detach().to("cpu", torch.float64).reshape(-1), stable=True).indices  # (N,)
    is_ood = torch.ones(count, dtype=torch.bool)
    is_ood[order[:kept]] = False
    boundary = float(scores.reshape(-1)[order[kept - 1]]) if kept > 0 else None
    return is_ood, boundary
