"""Turns to download finished images: as many at once as the image connections, the URL that
expires first served first.

Result URLs are pre-signed and expire (an hour at the provider, seconds in a test), so a URL
must never age in a queue of ours while a later one goes ahead. Waiters are kept in a heap
keyed by expiry; a freed turn is handed straight to the earliest.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["DownloadTurns"]


class _Entry:
    __slots__ = ("event", "granted", "gone")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False
        self.gone = False


class DownloadTurns:
    """At most ``slots`` downloads at once; waiters go in order of their URL's expiry."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.busy = 0
        self._heap: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, entry in self._heap if not entry.gone)

    @asynccontextmanager
    async def turn(self, expires_at: float) -> AsyncIterator[None]:
        """Hold a download turn; ``expires_at`` (clock time) orders the waiters."""
        if self.busy < self.slots and not self._heap:
            self.busy += 1
        else:
            entry = _Entry()
            heapq.heappush(self._heap, (expires_at, next(self._order), entry))
            try:
                await entry.event.wait()
            except BaseException:
                if entry.granted:    # handed a turn just as it was cancelled: pass it on
                    self._release()
                else:
                    entry.gone = True
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        heap = self._heap
        while heap:
            _, _, entry = heapq.heappop(heap)
            if not entry.gone:
                entry.granted = True
                entry.event.set()
                return
        self.busy -= 1
