"""What a training run reports: metrics.jsonl, the progress callback, the latest metrics, data counters."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodfilter.train.data import DataCounters

METRICS_FILE = "metrics.jsonl"
Progress = Callable[[int, int, str], None]


class MetricsLog:
    """Append-only JSONL of training and validation metrics (for plotting)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line (nothing when disabled)."""
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


@dataclass
class TrainingReport:
    """Collects what the loop measures and writes it out.

    Attributes:
        log: The metrics file (enabled on the main process only).
        progress: Called as ``progress(step, total_steps, text)`` after each step, or None.
        log_every: Write a step's losses every this many steps (and at the last step).
        metrics: The latest value of every loss part and validation metric.
        counters: Undecodable images skipped and captions truncated so far.
    """

    log: MetricsLog
    progress: Progress | None
    log_every: int
    metrics: dict[str, float] = field(default_factory=dict)
    counters: DataCounters = field(default_factory=DataCounters)
    _started: float = field(init=False, default_factory=time.perf_counter)
    _samples: int = field(init=False, default=0)

    def start_clock(self) -> None:
        """Start timing the samples per second from now."""
        self._started, self._samples = time.perf_counter(), 0

    def count_batch(self, batch: dict[str, Any]) -> None:
        """Add a collated batch's truncated captions and skipped images to the counters."""
        self.counters.truncated += batch["truncated"]
        self.counters.skipped += len(batch["skipped"])
        self.counters.skipped_paths.extend(batch["skipped"][:20])

    def record_step(self, step: int, total_steps: int, parts: dict[str, float], samples: int) -> None:
        """Record the loss parts of ``step``, which trained on ``samples`` samples (the global batch)."""
        self._samples += samples
        self.metrics.update(parts)
        rate = self._samples / max(time.perf_counter() - self._started, 1e-9)
        if step % self.log_every == 0 or step == total_steps:
            self.log.write({"step": step, **parts, "samples_per_s": rate})
        if self.progress is not None:
            self.progress(step, total_steps, f"loss {parts['loss']:.4f}, {rate:.0f} samples/s")

    def record_validation(self, step: int, metrics: dict[str, float]) -> None:
        """Record held-out metrics measured after ``step`` steps; the log line holds every ``val_`` metric."""
        self.metrics.update(metrics)
        self.log.write({"step": step, **{k: v for k, v in self.metrics.items() if k.startswith("val_")}})
