"""Progress display for long CLI work: a rich bar on a terminal, plain lines otherwise, nothing if quiet."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from types import TracebackType

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from oodfilter.encode_progress import EncodeHooks, reporting_encodes


class _Line:
    """One counted piece of work on the display: its bar row and its rate."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.task: TaskID | None = None
        self.last = 0.0
        self.start = time.perf_counter()
        self.first_done: int | None = None
        self.previous = -1


class TaskProgress:
    """A ``progress(done, total, text="")`` callback: a bar on a terminal, a line every few seconds otherwise.

    Inside :meth:`encodes`, caption encoding shows as a second line (``encoding captions``) of the same
    display, and its estimate is printed.

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
        self._main = _Line(label)

    def __enter__(self) -> TaskProgress:
        if not self.quiet and sys.stderr.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
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
        self._report(self._main, done, total, text)

    @contextlib.contextmanager
    def encodes(self) -> Iterator[None]:
        """Show every caption encode inside the block (text vectors not in the cache) and print its estimate.

        Image files encoded inside the block (an evaluation's sets, a plugin's fit) show on a line of their own.
        """
        line = _Line("encoding captions")
        images = _Line("encoding images")
        hooks = EncodeHooks(advance=lambda done, total: self._report(line, done, total), announce=self._say,
                            images=lambda done, total: self._report(images, done, total))
        with reporting_encodes(hooks):
            yield

    def _say(self, message: str) -> None:
        """Print a line above the bar (or on stderr without one), unless quiet."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            click.echo(message, err=True)

    def _report(self, line: _Line, done: int, total: int, text: str = "") -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if line.first_done is None or done < line.previous:  # a new count on the same line restarts its rate
            line.first_done, line.start = done, now
        line.previous = done
        rate = (done - line.first_done) / (now - line.start) if now > line.start else 0.0
        detail = text or f"{rate:.1f}/s"
        if self._bar is not None:
            if line.task is None:
                line.task = self._bar.add_task(line.label, total=total, rate="")
            self._bar.update(line.task, completed=done, total=total, rate=detail)
        elif now - line.last >= self.interval or done == total:
            line.last = now
            click.echo(f"{line.label} {done}/{total} ({detail})", err=True)
