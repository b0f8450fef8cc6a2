"""Show a run's progress: a live bar on a terminal, plain periodic lines otherwise.

It only reads the run's counters; it never changes what the run does, and a slow or absent
terminal never slows the run down.
"""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from typing import TextIO

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from batchgen.cli.render import render_notice, render_progress
from batchgen.engine.events import Notice
from batchgen.engine.stats import RunStats

__all__ = ["ProgressMode", "ProgressReporter"]


class ProgressMode(StrEnum):
    AUTO = "auto"    # a live bar on a terminal, lines otherwise
    LIVE = "live"    # a rich bar, redrawn four times a second
    LINES = "lines"  # a plain line every ``interval`` seconds
    QUIET = "quiet"  # nothing but notices' absence: the summary alone


class ProgressReporter:
    """The CLI's Reporter: notices as text, and the run's counters as a bar or lines."""

    def __init__(self, *, mode: ProgressMode = ProgressMode.AUTO, stream: TextIO | None = None,
                 interval: float = 10.0) -> None:
        self.stats = RunStats()
        self.stream = stream or sys.stdout
        mode = ProgressMode(mode)
        if mode is ProgressMode.AUTO:
            mode = ProgressMode.LIVE if self.stream.isatty() else ProgressMode.LINES
        self.mode = mode
        self.interval = interval
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self._progress: Progress | None = None
        self._rate_window: list[tuple[float, int]] = []

    def notice(self, notice: Notice) -> None:
        self.say(render_notice(notice))

    def say(self, text: str) -> None:
        """A message for the user, printed above the live bar if there is one."""
        if self.mode is ProgressMode.QUIET:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def rate(self) -> float:
        """Jobs finished per second over the last minute or so."""
        now = time.monotonic()
        finished = self.stats.done + self.stats.failed
        window = self._rate_window
        window.append((now, finished))
        while len(window) > 2 and now - window[0][0] > 60:
            window.pop(0)
        span = now - window[0][0]
        return (finished - window[0][1]) / span if span > 1 else 0.0

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
        if self.mode is ProgressMode.LINES:
            while True:
                await anyio.sleep(self.interval)
                print(self.line(), file=self.stream, flush=True)
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                            console=self.console, auto_refresh=False, transient=True)
        self._progress = progress
        task = progress.add_task("images", total=self.stats.planned, detail="")
        try:
            with progress:
                while True:
                    s = self.stats
                    detail = self.detail()
                    progress.update(task, completed=s.already_done + s.done, total=s.planned,
                                    detail=detail)
                    progress.refresh()
                    await anyio.sleep(0.25)
        finally:
            self._progress = None
