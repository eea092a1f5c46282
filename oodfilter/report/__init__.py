"""Visual reports of scans: one self-contained HTML page."""

from oodfilter.report.html import ReportConfig, write_report

__all__ = ["ReportConfig", "write_report"]
