"""Progress display for long CLI work: a rich bar on a terminal, plain lines otherwise, nothing if quiet."""

from __future__ import annotations

import sys
import time
from types import TracebackType

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class TaskProgress:
    """A ``progress(done, total, text="")`` callback: a bar on a terminal, a line every few seconds otherwise.

    Args:
        label: What is being counted (``scanning``, ``training``).
        quiet: Show nothing.
        interval: Seconds between plain log lines.
    """

    def __init__(self, label: str, *, quiet: bool, interval: float = 5.0) -> None:
        self.label = label
        self.quiet = quiet
        self.interval = interval
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last = 0.0
        self._start = time.perf_counter()
        self._first_done: int | None = None

    def __enter__(self) -> TaskProgress:
        if not self.quiet and sys.stderr.isatty():
            self._bar = Progress(
                TextColumn(self.label),
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

    def __call__(self, done: int, total: int, text: str = "") -> None:
        """Report that ``done`` of ``total`` units are finished; ``text`` replaces the rate if given."""
        if self.quiet:
            return
        now = time.perf_counter()
        if self._first_done is None:
            self._first_done, self._start = done, now
        rate = (done - self._first_done) / (now - self._start) if now > self._start else 0.0
        detail = text or f"{rate:.1f}/s"
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(self.label, total=total, rate="")
            self._bar.update(self._task, completed=done, rate=detail)
        elif now - self._last >= self.interval or done == total:
            self._last = now
            click.echo(f"{self.label} {done}/{total} ({detail})", err=True)
