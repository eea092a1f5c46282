"""Visual reports of scans: one self-contained HTML page.

The names below are imported on first access (see :mod:`oodfilter.lazy`), so that the scan's closing
tally (:mod:`oodfilter.report.class_rates`) loads without the HTML writer and its image decoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oodfilter.lazy import lazy_attribute, lazy_dir

_EXPORTS = {
    "ReportConfig": "oodfilter.report.html",
    "write_report": "oodfilter.report.html",
}

if TYPE_CHECKING:
    from oodfilter.report.html import ReportConfig, write_report


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _EXPORTS, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _EXPORTS)


__all__ = ["ReportConfig", "write_report"]
