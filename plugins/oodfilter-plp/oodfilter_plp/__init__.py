"""Pseudo-label probing (PLP) for oodfilter.

The names below are imported on first access (PEP 562): ``oodfilter fit --help`` imports
:mod:`oodfilter_plp.cli` for its help text, and that must not import torch through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LinearProbe": "oodfilter_plp.probe",
    "PLP": "oodfilter_plp.scorer",
    "fit_plp": "oodfilter_plp.scorer",
    "fit_probe": "oodfilter_plp.probe",
    "probe_cache_path": "oodfilter_plp.probe",
}

if TYPE_CHECKING:
    from oodfilter_plp.probe import LinearProbe, fit_probe, probe_cache_path
    from oodfilter_plp.scorer import PLP, fit_plp


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["PLP", "LinearProbe", "fit_plp", "fit_probe", "probe_cache_path"]
