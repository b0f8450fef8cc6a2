"""When to ask about a task next: few polls, yet a finished task is seen almost at once.

A provider slot frees only when a poll sees its task finished, so every poll buys wall time.
The planner learns how long tasks take (from the provider's own timestamps when it gives
them), makes the first poll when the quickest tenth of tasks would be done, and then aims at
the finish estimated from ``progress_percent``; without progress, at the middle of the learned
durations still possible (narrowed by ``eta``, whole seconds rounded up by the provider), and
with nothing learned yet it backs off exponentially. No task is polled past its deadline.

With nothing learned yet, a task's first poll comes after a quarter second: a provider that
finishes at once is seen at once (a full second there left every slot idle for that second),
and a slow one costs a few early polls of the first tasks only, until durations are learned.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

from batchgen.provider.wire import PROCESSING, QUEUED, TaskResult

__all__ = ["PollPlanner", "TaskClock"]


@dataclass
class TaskClock:
    """What we know of one task's timing; times are on the event loop's clock."""

    submitted_at: float
    polls: int = 0
    last_delay: float = 0.0
    progress: float | None = None
    progress_at: float = 0.0
    started_at: float | None = None
    result_at: float | None = None   # when the answer that said "finished" arrived (URLs age from it)


class PollPlanner:
    """Shared by every task of a run; ``first_delay`` and ``next_delay`` return seconds."""

    def __init__(self, *, min_delay: float = 0.05, max_delay: float = 10.0, cold_first: float = 0.25,
                 first_quantile: float = 0.1, backoff_start: float = 0.5, backoff_factor: float = 1.5,
                 margin: float = 0.015, lateness: float = 0.005, window: int = 256) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.cold_first = cold_first
        self.first_quantile = first_quantile
        self.backoff_start = backoff_start
        self.backoff_factor = backoff_factor
        self.margin = margin
        self.lateness = lateness
        self._durations: deque[float] = deque(maxlen=window)
        self._sorted: list[float] | None = None

    def _quantile(self, q: float) -> float | None:
        if not self._durations:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._durations)
        values = self._sorted
        return values[min(len(values) - 1, int(q * len(values)))]

    def learn(self, seconds: float) -> None:
        """Record how long a finished task took from submit to finish."""
        if seconds >= 0:
            self._durations.append(seconds)
            self._sorted = None

    def first_delay(self, already_waited: float = 0.0) -> float:
        """Delay before the first poll of a task submitted ``already_waited`` seconds ago."""
        typical = self._quantile(self.first_quantile)
        target = self.cold_first if typical is None else typical
        return self._clamp(target - already_waited)

    def next_delay(self, clock: TaskClock, result: TaskResult, now: float) -> float:
        """Delay before the next poll of an unfinished task, given its latest answer."""
        task = result.task
        elapsed = now - clock.submitted_at
        progress = task.progress_percent
        if task.status == PROCESSING and clock.started_at is None:
            clock.started_at = now
        if task.status == PROCESSING and progress is not None and 0 < progress < 100:
            if clock.progress is not None and progress > clock.progress and now > clock.progress_at:
                rate = (progress - clock.progress) / (now - clock.progress_at)
                remaining = (100.0 - progress) / rate
            else:
                remaining = elapsed * (100.0 - progress) / progress
            clock.progress, clock.progress_at = progress, now
            delay = remaining * (1 + self.lateness) + self.margin
        else:
            # No progress: the task ends after ``elapsed``, and if eta is given (whole seconds,
            # rounded up) within (eta - 1, eta] from now. Aim at the middle of the learned
            # durations that fit; without enough of them, use eta alone, or back off.
            eta = task.eta if task.eta and task.status in (PROCESSING, QUEUED) else None
            low = elapsed if eta is None else max(elapsed, elapsed + eta - 1)
            high = None if eta is None else elapsed + eta
            target = self._conditional_median(low, high)
            if target is not None:
                delay = target - elapsed + self.margin
            elif eta is not None:
                delay = max(eta - 0.5, 0.5 * eta)
            else:
                delay = max(self.backoff_start, clock.last_delay * self.backoff_factor)
        clock.last_delay = self._clamp(delay)
        return clock.last_delay

    def _conditional_median(self, low: float, high: float | None) -> float | None:
        """Median of the learned durations in (low, high], if enough of them are there."""
        if len(self._durations) < 20:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._durations)
        values = self._sorted
        first = bisect_right(values, low)
        last = len(values) if high is None else bisect_right(values, high)
        if last - first < 5:
            return None
        return values[(first + last) // 2]

    def _clamp(self, delay: float) -> float:
        return min(self.max_delay, max(self.min_delay, delay))
