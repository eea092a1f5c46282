"""Finite-number checks for values read from files (JSON may hold integers too large for a float)."""

from __future__ import annotations

import math
from typing import Any


def is_finite(value: Any) -> bool:
    """Return whether ``value`` converts to a finite float (False for NaN, infinities and huge integers)."""
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError, ValueError):
        return False
