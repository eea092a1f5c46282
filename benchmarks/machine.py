"""What machine a benchmark ran on, for the record printed beside its figures."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_stage_process(script: str, stage: str, *args: str) -> dict[str, Any]:
    """Run ``python SCRIPT --stage STAGE ARGS`` in a fresh process; return the JSON its last line prints.

    A fresh process per stage gives each its own peak memory; a stage that fails stops the benchmark with
    its stderr.
    """
    command = [sys.executable, script, "--stage", stage, *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
