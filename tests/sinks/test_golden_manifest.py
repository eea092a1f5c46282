"""Manifests are byte-identical to the ones the code wrote before the refactors (a fixed scan, tiny model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["scan.jsonl", "scan.csv", "scan-mcm.jsonl"])
def test_fixed_scan_writes_the_golden_manifest_byte_for_byte(tmp_path, name):
    golden = _golden_module()
    golden.make_inputs(tmp_path)
    manifest = golden.run_golden_scan(tmp_path, name, tmp_path / "cache")
    assert manifest.read_bytes() == (GOLDEN / name).read_bytes()
