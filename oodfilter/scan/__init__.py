"""Scanning image files: the library behind ``oodfilter scan``."""

from oodfilter.scan.config import ScanConfig, load_scan_config
from oodfilter.scan.runner import ScanSummary, scan

__all__ = ["ScanConfig", "ScanSummary", "load_scan_config", "scan"]
