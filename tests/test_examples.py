"""The examples run as written (they train a few steps on the real images with the tiny model)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["filter_online.py", "filter_manifest.py", "filter_torchdata.py"])
def test_example_runs(script, shared_data, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OODFILTER_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, script], cwd=EXAMPLES, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "10 steps" in result.stdout
    # each example's filter really removed something (its threshold is set near the 80th percentile)
    assert re.search(r"dropped'?:? ([1-9]\d*)|: ([1-9]\d*) OOD", result.stdout), result.stdout
