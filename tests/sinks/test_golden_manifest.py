"""Manifests are identical to the ones the code wrote before the refactors (a fixed scan, tiny model), every
byte but the last bits of real numbers, which differ between CPUs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A decimal number with a fraction or exponent (scores, probabilities); integers and text are compared as bytes.
_REAL = re.compile(rb"-?\d+\.\d+(?:[eE][-+]?\d+)?")


@pytest.mark.parametrize("name", ["scan.jsonl", "scan.csv", "scan-mcm.jsonl"])
def test_fixed_scan_writes_the_golden_manifest_up_to_float_rounding(tmp_path, name):
    golden = _golden_module()
    golden.make_inputs(tmp_path)
    written = golden.run_golden_scan(tmp_path, name, tmp_path / "cache").read_bytes()
    expected = (GOLDEN / name).read_bytes()
    # Every byte but the digits of real numbers is identical (columns, order, quoting, decisions, classes);
    # the numbers agree to float32 rounding: CPUs differ in their last bits (an AMX Xeon against the AMD
    # machine that wrote the golden files: up to ~1e-6 relative).
    assert _REAL.sub(b"<real>", written) == _REAL.sub(b"<real>", expected)
    got = [float(x) for x in _REAL.findall(written)]
    want = [float(x) for x in _REAL.findall(expected)]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
