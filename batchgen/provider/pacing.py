"""How fast to go: bounded exponential backoff, and the one rate gate all submitters share.

A 429 is about the account, not about one request, so it pauses every submitter at once; after
the pause a single probe goes first, and the others follow only once it got through, instead of
a thundering herd that earns another 429.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ["Backoff", "RateGate"]


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


class RateGate:
    """Spaces submits to at most ``per_minute`` and pauses everyone after a 429."""

    def __init__(self, per_minute: float | None = None, backoff: Backoff | None = None, *,
                 now: Callable[[], float] = anyio.current_time,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        self.per_minute = per_minute
        self._now = now
        self._sleep = sleep
        self.backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._needs_probe = False
        self._probe: anyio.Event | None = None
        self._consecutive_429 = 0
        self.pauses = 0

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._now())

    async def wait(self) -> bool:
        """Wait for the right to submit; True when this caller is the probe after a pause."""
        while True:
            now = self._now()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                continue
            if self._probe is not None:
                await self._probe.wait()
                continue
            break
        probe = self._needs_probe
        if probe:
            self._needs_probe = False
            self._probe = anyio.Event()
        if self.per_minute:
            now = self._now()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 60.0 / self.per_minute
            if slot > now:
                await self._sleep(slot - now)
        return probe

    def passed(self) -> None:
        """The submit was not rate limited: let the others through."""
        self._consecutive_429 = 0
        self._release_probe()

    def limited(self, retry_after: float | None) -> float:
        """The provider said 429: pause every submitter; returns the pause in seconds."""
        self._consecutive_429 += 1
        self.pauses += 1
        delay = retry_after if retry_after is not None else self.backoff.delay(self._consecutive_429 - 1)
        self._paused_until = max(self._paused_until, self._now() + delay)
        self._needs_probe = True
        self._release_probe()
        return delay

    def _release_probe(self) -> None:
        if self._probe is not None:
            self._probe.set()
            self._probe = None
