"""Group commit: saved images and sidecars reach the disk together, then the ledger says done.

A job may be recorded done only once its files would survive a power cut, but an fsync per
file on the event loop would make every job wait for the disk. So saves queue here; every
``interval`` seconds the queued group goes to one worker thread, which makes it durable with
one ``Writer.sync`` (an fsync per file, then per folder) while the loop goes on polling and
downloading; at the next tick the loop writes the ``done`` events of the groups the worker
finished. The same worker fsyncs the ledger once a second when it was appended to (its appends
already reached the OS). With nothing saved and nothing at the worker the loop sleeps until the
next save or the ledger's fsync is due, not every ``interval``: a batch waiting an hour on slow
tasks wakes once a second, not ten times. Nothing on the loop ever waits for the worker, so a slow disk never stalls polls (and
virtual time in tests never runs on while a thread works), except ``close`` at the end of a
run. A crash in between leaves those jobs ``generated``: the next run follows their tasks
again and fetches the images once more, paying nothing twice.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from batchgen.engine.clock import Clock
from batchgen.engine.stats import RunStats
from batchgen.errors import OutputError
from batchgen.storage.ledger import Ledger
from batchgen.storage.writer import SavedFiles, Writer

__all__ = ["Committer", "Saved"]


@dataclass(frozen=True, slots=True)
class Saved:
    """One job's files, saved and waiting to be made durable and recorded done."""

    job_id: str
    files: SavedFiles
    size_got: str | None = None  # the image's size as received, when not the one asked for
    derived: str | None = None   # the digest its caption and sidecar fields were written from


class Committer:
    """Makes saved files durable in groups, then records their jobs done.

    A run starts ``run()`` in its task group and calls ``close()`` when the work is over.
    With ``interval`` 0 (a collector built by hand, without a task group) every save is made
    durable and recorded at once, on the spot. ``on_error`` hears of a disk that cannot sync.
    """

    def __init__(self, ledger: Ledger, writer: Writer, stats: RunStats, clock: Clock, *,
                 interval: float = 0.1, ledger_every: float = 1.0,
                 on_error: Callable[[OutputError], None] | None = None) -> None:
        self.ledger = ledger
        self.writer = writer
        self.stats = stats
        self.clock = clock
        self.interval = interval
        self.ledger_every = ledger_every
        self.on_error = on_error
        self._pending: list[Saved] = []
        self._ledger_synced = clock.now()
        # A group of saves to make durable; an empty group asks for a ledger fsync; None stops.
        self._todo: queue.SimpleQueue[list[Saved] | None] = queue.SimpleQueue()
        self._finished: deque[tuple[list[Saved], OutputError | None, float]] = deque()
        self._worker: threading.Thread | None = None
        self._failed: OutputError | None = None
        self._at_worker = 0  # groups handed to the worker and not yet recorded
        self._wake: anyio.Event | None = None  # set by the next save while the loop idles

    async def add(self, saved: Saved) -> None:
        """Queue one job's saved files (made durable and recorded at once without grouping)."""
        self._pending.append(saved)
        if self.interval <= 0:
            self._record(self._sync(self._take()))
        elif self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Every ``interval`` seconds: hand the queued saves to the worker, record what it
        finished. Runs until cancelled. With ``interval`` 0 saves are recorded on the spot, and
        this only fsyncs the ledger every ``ledger_every`` seconds, on the loop."""
        if self.interval <= 0:
            while True:
                await self.clock.sleep(self.ledger_every)
                self._record(self._sync([]))
        while True:
            if self._pending or self._at_worker:
                await self.clock.sleep(self.interval)
            else:
                self._wake = anyio.Event()
                due = self._ledger_synced + self.ledger_every - self.clock.now()
                with anyio.move_on_after(max(due, self.interval)):
                    await self._wake.wait()
                self._wake = None
                if self._pending:  # a save woke it: gather the group for one interval
                    await self.clock.sleep(self.interval)
            self.tick()

    def tick(self) -> None:
        if self._failed is None:
            if self._pending:
                self._hand(self._take())
            if self.clock.now() - self._ledger_synced >= self.ledger_every:
                self._ledger_synced = self.clock.now()
                if self.ledger.unsynced:
                    self._hand([])
        while self._finished:
            self._at_worker -= 1
            self._record(self._finished.popleft())

    def _hand(self, group: list[Saved]) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="batchgen-commit", daemon=True)
            self._worker.start()
        self._at_worker += 1
        self._todo.put(group)

    def close(self) -> None:
        """Make everything saved so far durable and record it, waiting for the worker (the
        run is over, so nothing else waits behind it). Safe to call twice."""
        if self._worker is not None:
            self._todo.put(None)
            self._worker.join()
            self._worker = None
        self._at_worker = 0
        while self._finished:
            self._record(self._finished.popleft())
        if self._pending and self._failed is None:
            self._record(self._sync(self._take()))

    # -- the work ---------------------------------------------------------------------------

    def _take(self) -> list[Saved]:
        group, self._pending = self._pending, []
        return group

    def _sync(self, group: list[Saved]) -> tuple[list[Saved], OutputError | None, float]:
        started = time.perf_counter()
        try:
            if group:
                self.writer.sync()
            else:
                self.ledger.sync()
        except OutputError as exc:
            return group, exc, time.perf_counter() - started
        return group, None, time.perf_counter() - started

    def _work(self) -> None:
        while True:
            group = self._todo.get()
            if group is None:
                return
            self._finished.append(self._sync(group))

    def _record(self, outcome: tuple[list[Saved], OutputError | None, float]) -> None:
        group, error, seconds = outcome
        if group:
            self.stats.sync_seconds += seconds
        if error is not None:
            # Not durable: those jobs stay 'generated', and the next run fetches them again.
            if self._failed is None:
                self._failed = error
                if self.on_error is not None:
                    self.on_error(error)
                else:
                    raise error
            return
        if not group:
            return
        self.stats.syncs += 1
        full: OutputError | None = None
        for item in group:
            f = item.files
            try:
                self.ledger.done(item.job_id, f.file, f.size, f.sha256, f.sidecar_size,
                                 size_got=item.size_got, derived=item.derived)
            except OutputError as exc:
                # A full disk: the ledger still writes into its reserve (and says so each
                # time), so every durable job of the group gets its line before the batch stops.
                full = full or exc
                continue
            self.stats.done += 1
            self.stats.bytes += f.size
        if full is not None and self._failed is None:
            self._failed = full
            if self.on_error is not None:
                self.on_error(full)
            else:
                raise full
