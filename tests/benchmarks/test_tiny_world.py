"""The tiny-world quality benchmark's quick mode runs end to end (pretrain, finetune, eval, table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "tiny_world" / "run.py"


@pytest.mark.slow
def test_quick_mode_runs_the_whole_pipeline(shared_data, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(tmp_path / "out"), "--cache-dir",
                             str(tmp_path / "cache")], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    run = saved["runs"][0]
    assert set(run["results"]) == {"msp", "energy", "maxlogit", "mcm", "ctw", "atd", "neglabel", "plp"}
    assert run["sets"] == ["near-ood", "far-ood-textures"]
    assert 0.0 <= run["world_accuracy"] <= 1.0 and run["id_accuracy"] is not None
    for line in ("atd", "neglabel", "plp"):
        assert any(row.startswith(line) for row in result.stdout.splitlines())
    # the pretrained world is cached: a second run skips pretraining
    again = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(tmp_path / "out2"), "--cache-dir",
                            str(tmp_path / "cache")], env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "world model from cache" in again.stdout
