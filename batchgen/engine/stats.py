"""Live counters of one run: what the progress display, the summary and the viewers read.

Plain data with one owner per counter: the scheduler counts submits, the collector polls,
downloads and outcomes, the run's limits (``pace``) tasks in flight, the current limit and
any pause. Importing it loads no HTTP stack, so a display can read it.
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
    already_done: int = 0
    submitted: int = 0
    generated: int = 0
    done: int = 0
    failed: int = 0
    polls: int = 0
    downloads: int = 0
    bytes: int = 0
    refreshed_urls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    #: the run's Limits (provider/limits.py): ``pace.snapshot()`` is the limit, pause, outage now
    pace: Any = field(default=None, repr=False)

    @property
    def in_flight(self) -> int:
        return self.pace.in_flight if self.pace is not None else 0

    def fail(self, label: str) -> None:
        self.failed += 1
        self.failures[label] += 1
