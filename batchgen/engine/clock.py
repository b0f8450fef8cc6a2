"""The one place the engine asks for time: now, wall time for people, and sleeping.

Every wait of the engine (polls, backoff, Retry-After, task timeouts, the ledger's fsync
cadence) goes through a Clock, so a test can run an hour of backoff in milliseconds and
replay it exactly. ``LoopClock`` reads the event loop's clock, so under trio's
``MockClock(autojump_threshold=0)`` the whole engine runs in virtual time unchanged.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ["Clock", "LoopClock"]


class Clock(Protocol):
    """``now`` and ``sleep`` share one monotonic timeline, the event loop's (cancel-scope
    deadlines are on it too); ``wall`` is Unix time for the ledger and sidecars."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The event loop's clock; wall time follows it from a fixed offset taken at creation, so
    sidecar timestamps and durations never disagree (one clock, not two)."""

    def __init__(self) -> None:
        self._offset = time.time() - anyio.current_time()

    def now(self) -> float:
        return anyio.current_time()

    def wall(self) -> float:
        return anyio.current_time() + self._offset

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
