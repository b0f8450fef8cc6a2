"""Show a run's progress: a live bar on a terminal, plain periodic lines otherwise.

It only reads the run's counters; it never changes what the run does, and a slow, absent or
closed terminal (``| head``) never slows the run down or stops it. Counts and ETA are against
what this run set out to do (``--max-jobs`` takes a slice of the manifest).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, TextIO

import anyio

from batchgen.cli.invocation import Invocation
from batchgen.cli.render import render_notice, render_progress
from batchgen.engine.events import Notice
from batchgen.engine.stats import RunStats

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["ProgressMode", "ProgressReporter"]


class ProgressMode(StrEnum):
    AUTO = "auto"    # a live bar on a terminal, lines otherwise
    LIVE = "live"    # a rich bar, redrawn four times a second
    LINES = "lines"  # a plain line every ``interval`` seconds
    QUIET = "quiet"  # nothing but notices' absence: the summary alone


def _bar(stream: TextIO, *details: str) -> Progress:
    """A live bar of a description, the bar and "N/M", then ``details`` (task fields): rich is
    loaded here, on a terminal only, so a run whose output goes to a file or a pipe (a cluster
    job, a script) never pays its import."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *(TextColumn(f"{{task.fields[{name}]}}") for name in details),
                    console=Console(file=stream, highlight=False, soft_wrap=True),
                    auto_refresh=False, transient=True)


def _resolve(mode: ProgressMode | str, stream: TextIO) -> ProgressMode:
    """AUTO becomes a live bar on a terminal and plain lines otherwise."""
    mode = ProgressMode(mode)
    if mode is ProgressMode.AUTO:
        return ProgressMode.LIVE if stream.isatty() else ProgressMode.LINES
    return mode


class ProgressReporter:
    """The CLI's Reporter: notices as text, and the run's counters as a bar or lines."""

    def __init__(self, *, mode: ProgressMode = ProgressMode.AUTO, stream: TextIO | None = None,
                 interval: float = 10.0, invocation: Invocation | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.stats = RunStats()
        self.stream = stream or sys.stdout
        self.mode = _resolve(mode, self.stream)
        self.interval = interval
        self.invocation = invocation
        self._now = now
        self._progress: Progress | None = None
        self._rate_window: list[tuple[float, int]] = []

    def notice(self, notice: Notice) -> None:
        text = render_notice(notice, self.invocation)
        if text is not None:
            self.say(text)

    def say(self, text: str) -> None:
        """A message for the user, printed above the live bar if there is one."""
        if self.mode is ProgressMode.QUIET:
            return
        try:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                print(text, file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # the reader went away: the run goes on quietly
            self.mode = ProgressMode.QUIET

    def rate(self) -> float:
        """Jobs finished per second over the last minute or so (since the start, at first)."""
        now = self._now()
        finished = self.stats.done + self.stats.failed
        window = self._rate_window
        if not window:
            window.append((now, 0))  # the run's start: the first line already has a rate
        window.append((now, finished))
        while len(window) > 2 and now - window[0][0] > 60:
            window.pop(0)
        span = now - window[0][0]
        return (finished - window[0][1]) / span if span > 1 else 0.0

    def goal(self) -> int:
        """What this run means to have done by its end (the manifest's jobs without a cap)."""
        s = self.stats
        return s.goal or s.planned

    def detail(self) -> str:
        """In flight and the limit, pauses, failed, rate and ETA: beside the count."""
        return render_progress(self.stats, self.rate())

    def line(self) -> str:
        return render_progress(self.stats, self.rate(), count=True)

    async def watch(self, stats: RunStats) -> None:
        """Show ``stats`` until cancelled."""
        self.stats = stats
        if self.mode is ProgressMode.QUIET:
            await anyio.sleep_forever()
        self.rate()  # the window starts now
        if self.mode is ProgressMode.LINES:
            while self.mode is ProgressMode.LINES:
                await anyio.sleep(self.interval)
                self.say(f"batchgen: {self.line()}")
            await anyio.sleep_forever()
        progress = self._progress = _bar(self.stream, "detail")
        task = progress.add_task("images", total=self.goal(), detail="")
        try:
            with progress:
                while True:
                    s = self.stats
                    detail = self.detail()
                    progress.update(task, completed=s.already_done + s.done, total=self.goal(),
                                    detail=detail)
                    progress.refresh()
                    await anyio.sleep(0.25)
        finally:
            self._progress = None


class ExportProgressView:
    """An export's progress: a rich bar on a terminal, a line every ``interval`` s otherwise.

    Its ``update`` is the export's progress callback; it never slows the export (redraws at
    most four times a second).
    """

    def __init__(self, mode: ProgressMode = ProgressMode.AUTO, stream: TextIO | None = None,
                 interval: float = 10.0,
                 render: Callable[[object, int, int | None], str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._render = render  # the plain line (default: an export's)
        self.mode = _resolve(mode, self.stream)
        self.interval = interval
        self._last = 0.0
        self._progress: Progress | None = None
        self._tasks: dict[object, object] = {}

    def __enter__(self) -> ExportProgressView:
        self._last = time.monotonic()
        if self.mode is ProgressMode.LIVE:
            self._progress = _bar(self.stream)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def update(self, phase: object, done: int, total: int | None) -> None:
        from batchgen.cli.render import render_export_progress

        now = time.monotonic()
        if self.mode is ProgressMode.LINES:
            if now - self._last >= self.interval:
                self._last = now
                line = (self._render or render_export_progress)(phase, done, total)  # type: ignore[arg-type]
                print(line, file=self.stream, flush=True)
        elif self._progress is not None and (now - self._last >= 0.25 or done == total):
            self._last = now
            task = self._tasks.get(phase)
            if task is None:
                task = self._tasks[phase] = self._progress.add_task(str(phase), total=total)
            self._progress.update(task, completed=done, total=total)  # type: ignore[arg-type]
            self._progress.refresh()
