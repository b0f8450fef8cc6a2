"""Bounded exponential backoff with jitter: how long one request waits before its next try.

Waits shared by every submitter (the limit on tasks in flight, the rate window, pauses a 429
asks for, the retry budget) live in ``limits.py``; this is only the per-request part.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "PaceReport"]


@dataclass(frozen=True)
class Backoff:
    """Exponential delays with jitter, and how many tries in all before giving up."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    attempts: int = 8

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before try number ``attempt + 1`` (attempt counts from 0): half fixed, half random."""
        ceiling = min(self.cap, self.base * self.factor ** max(attempt, 0))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class PaceReport:
    """What the provider's limits did over a run (``Limits.report``), for the run summary and
    the benchmarks: the limit on tasks in flight (``ceiling`` is the concurrency asked for),
    the 429s by what they were taken for, the rate window. Here, not in ``limits.py``, so the
    summary can hold one without loading anyio."""

    ceiling: int
    limit_min: int
    limit_median: int
    limit_max: int
    refusals: dict[str, int] = field(default_factory=dict)   # Refusal value -> count
    window: int | None = None          # submits per minute allowed, given or learned
    window_learned: bool = False
    retries: int = 0                   # retries paid from the retry budget

    @property
    def adapted(self) -> bool:
        return self.limit_min < self.ceiling
