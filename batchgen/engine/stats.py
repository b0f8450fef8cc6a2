"""Live counters of one run: what the progress display, the summary and the viewers read.

Plain data with one owner per counter: the scheduler counts submits, the collector polls,
downloads and outcomes, the committer what was recorded done, the run's limits (``pace``)
tasks in flight, the current limit and any pause. Importing it loads no HTTP stack, so a
display can read it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunStats"]


@dataclass
class RunStats:
    """Counters of one run. ``started`` is on the run's clock."""

    planned: int = 0
    goal: int = 0            # jobs done by the end of this run if all goes well (--max-jobs)
    already_done: int = 0
    submitted: int = 0
    generated: int = 0
    done: int = 0
    failed: int = 0
    polls: int = 0
    downloads: int = 0
    bytes: int = 0
    refreshed_urls: int = 0
    refused: int = 0          # submits the provider refused as invalid (no task created)
    size_mismatched: int = 0  # images saved at another size than the request asked for
    size_example: str | None = None
    syncs: int = 0            # group commits: one fsync of every file saved since the last
    sync_seconds: float = 0.0  # time those took (in the committer's worker thread)
    failures: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    #: the run's Limits (provider/limits.py): ``pace.snapshot()`` is the limit, pause, outage now
    pace: Any = field(default=None, repr=False)

    @property
    def in_flight(self) -> int:
        return self.pace.in_flight if self.pace is not None else 0

    def fail(self, label: str, refused: bool = False) -> None:
        self.failed += 1
        self.failures[label] += 1
        self.refused += refused

    def unfail(self, label: str) -> None:
        """A failure this run takes back (the job is being redone)."""
        self.failed -= 1
        self.failures[label] -= 1
        if self.failures[label] <= 0:
            del self.failures[label]

    def wrong_size(self, example: str) -> None:
        self.size_mismatched += 1
        if self.size_example is None:
            self.size_example = example
