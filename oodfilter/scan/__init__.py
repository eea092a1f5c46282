"""Scanning image files: the library behind ``oodfilter scan``.

The names below are imported on first access (see :mod:`oodfilter.lazy`), so that ``oodfilter scan
--help`` reads :mod:`oodfilter.scan.config` without importing the runner and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oodfilter.lazy import lazy_attribute, lazy_dir

_EXPORTS = {
    "ScanConfig": "oodfilter.scan.config",
    "ScanSummary": "oodfilter.scan.runner",
    "load_scan_config": "oodfilter.scan.config",
    "scan": "oodfilter.scan.runner",
}

if TYPE_CHECKING:
    from oodfilter.scan.config import ScanConfig, load_scan_config
    from oodfilter.scan.runner import ScanSummary, scan


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _EXPORTS, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _EXPORTS)


__all__ = ["ScanConfig", "ScanSummary", "load_scan_config", "scan"]
