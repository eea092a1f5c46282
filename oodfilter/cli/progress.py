"""Progress display for long CLI work: a rich bar on a terminal, plain lines otherwise, nothing if quiet."""

from __future__ import annotations

import sys
import time
from types import TracebackType

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class ScanProgress:
    """A ``progress(done, total)`` callback that draws a bar on a terminal or logs every few seconds."""

    def __init__(self, *, quiet: bool, interval: float = 5.0) -> None:
        self.quiet = quiet
        self.interval = interval
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last = 0.0
        self._start = time.perf_counter()
        self._first_done: int | None = None

    def __enter__(self) -> ScanProgress:
        if not self.quiet and sys.stderr.isatty():
            self._bar = Progress(
                TextColumn("scanning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` inputs are in the manifest."""
        if self.quiet:
            return
        now = time.perf_counter()
        if self._first_done is None:
            self._first_done, self._start = done, now
        rate = (done - self._first_done) / (now - self._start) if now > self._start else 0.0
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task("scan", total=total, rate="")
            self._bar.update(self._task, completed=done, rate=f"{rate:.1f} files/s")
        elif now - self._last >= self.interval or done == total:
            self._last = now
            click.echo(f"scanned {done}/{total} files ({rate:.1f} files/s)", err=True)
