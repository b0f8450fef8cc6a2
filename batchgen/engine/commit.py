"""Group commit: checked images and their sidecars are written and reach the disk together,
off the event loop; only then does the ledger say done.

A job may be recorded done only once its files would survive a power cut. Creating, writing
and renaming files, making folders and fsyncing them are system calls that cost as much CPU
as the rest of a job, and an fsync per file would make every job wait for the disk. So a
checked image queues here with its sidecar; every ``interval`` seconds the queued group goes
to a worker thread, which writes every file of the group (``Writer.save``) and makes them
durable with one ``Writer.sync`` (an fsync per file, then per folder), while the loop goes on
polling and downloading (system calls release the GIL, so the worker runs on the second
core); once it is back, the loop writes the group's ``done`` events, or stops the batch
if the disk failed. Once a second the worker fsyncs the ledger too (its appends already
reached the OS). Nothing on the loop waits for the worker (a task waiting for a thread would
let virtual time in tests run on while it works): only a queue past ``max_bytes`` makes
saves wait (so a stalled disk cannot fill memory with images), and ``close`` at the end.
A crash in between leaves those jobs ``generated``: the next run follows their tasks again
and fetches the images once more, paying nothing twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from batchgen.engine.clock import Clock
from batchgen.engine.stats import RunStats
from batchgen.errors import OutputError
from batchgen.job import Job
from batchgen.storage.ledger import Ledger
from batchgen.storage.sidecar import Sidecar
from batchgen.storage.writer import SavedFiles, Writer

__all__ = ["Committer", "Saved"]

log = logging.getLogger("batchgen.engine.commit")


@dataclass(slots=True)
class Saved:
    """One job's checked image and sidecar, waiting to be written, made durable and recorded
    done; ``files`` is what the writer stored, once it has."""

    job: Job
    data: bytes
    sidecar: Sidecar
    size_got: str | None = None  # the image's size as received, when not the one asked for
    files: SavedFiles | None = None


@dataclass(slots=True)
class _Outcome:
    """What the worker hands back for one group: every item (to release their bytes), the
    ones written and made durable (a prefix, when a write failed part-way), the error that
    stopped it, and the seconds its sync took."""

    group: list[Saved]
    durable: int = 0
    error: OutputError | None = None
    seconds: float = 0.0


class Committer:
    """Writes saved results and makes them durable in groups, then records their jobs done.

    A run starts ``run()`` in its task group and calls ``close()`` when the work is over.
    With ``interval`` 0 (a collector built by hand, without a task group) every save is
    written, made durable and recorded at once, on the spot. ``on_error`` hears of a disk
    that cannot write or sync (without it, the error is raised).
    """

    def __init__(self, ledger: Ledger, writer: Writer, stats: RunStats, clock: Clock, *,
                 interval: float = 0.1, ledger_every: float = 1.0, max_bytes: int = 256 << 20,
                 on_error: Callable[[OutputError], None] | None = None) -> None:
        self.ledger = ledger
        self.writer = writer
        self.stats = stats
        self.clock = clock
        self.interval = interval
        self.ledger_every = ledger_every
        self.max_bytes = max_bytes
        self.on_error = on_error
        self._pending: list[Saved] = []
        self._queued_bytes = 0   # image bytes handed over and not yet recorded (loop-side count)
        self._ledger_synced = clock.now()
        # A group to write and make durable; an empty group asks for a ledger fsync; None stops.
        self._todo: queue.SimpleQueue[list[Saved] | None] = queue.SimpleQueue()
        self._finished: deque[_Outcome] = deque()   # filled by the worker, recorded by the loop
        self._worker: threading.Thread | None = None
        self._failed: OutputError | None = None   # seen by the loop
        self._broken: OutputError | None = None   # seen by whoever writes (the worker)

    async def add(self, saved: Saved) -> None:
        """Queue one job's checked image and sidecar (written, made durable and recorded at
        once without grouping). Waits while more than ``max_bytes`` of images are queued."""
        while self._queued_bytes > self.max_bytes and self._failed is None and self.interval > 0:
            await self.clock.sleep(self.interval)
        self._pending.append(saved)
        self._queued_bytes += len(saved.data)
        if self.interval <= 0:
            self._record(self._commit(self._take()))
        elif self._finished:   # a group is back: record it now (a failed disk stops the batch sooner)
            self._drain()

    async def run(self) -> None:
        """Every ``interval`` seconds: hand the queued saves to the worker, record what it
        finished. Runs until cancelled."""
        while True:
            await self.clock.sleep(self.interval)
            self.tick()

    def tick(self) -> None:
        if self._failed is None:
            if self._pending:
                self._hand(self._take())
            if self.clock.now() - self._ledger_synced >= self.ledger_every:
                self._ledger_synced = self.clock.now()
                self._hand([])
        self._drain()

    def _drain(self) -> None:
        while self._finished:
            self._record(self._finished.popleft())

    def _hand(self, group: list[Saved]) -> None:
        # A thread of its own, never awaited: a task waiting for a thread would let virtual
        # time in tests jump ahead while the thread works.
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="batchgen-commit", daemon=True)
            self._worker.start()
        self._todo.put(group)

    def close(self) -> None:
        """Write and make durable everything queued so far and record it, waiting for the
        worker (the run is over, so nothing else waits behind it). Safe to call twice."""
        if self._worker is not None:
            self._todo.put(None)
            self._worker.join()
            self._worker = None
        self._drain()
        if self._pending and self._failed is None:
            self._record(self._commit(self._take()))

    # -- the work ---------------------------------------------------------------------------

    def _take(self) -> list[Saved]:
        group, self._pending = self._pending, []
        return group

    def _commit(self, group: list[Saved]) -> _Outcome:
        """Write the group's files, then make them durable (an empty group: the ledger's
        appends). A write that fails stops the group there; what was written before it is
        still made durable, so it is recorded done. Blocking: the worker thread's work, or
        the caller's without grouping."""
        outcome = _Outcome(group)
        if self._broken is not None:   # after a failed write or sync, write nothing more
            outcome.error = self._broken
            return outcome
        if not group:
            try:
                self.ledger.sync()
            except OutputError as exc:
                outcome.error = self._broken = exc
            return outcome
        written = 0
        try:
            for item in group:
                item.files = self.writer.save(item.job, item.data, item.sidecar)
                written += 1
        except OutputError as exc:
            outcome.error = exc
        except Exception as exc:  # a writer's bug must stop the batch, not the worker alone
            log.exception("saving a result failed")
            outcome.error = OutputError(f"cannot save results: {type(exc).__name__}: {exc}")
        if written:
            started = time.perf_counter()
            try:
                self.writer.sync()
            except OutputError as exc:
                outcome.error = outcome.error or exc
            else:
                outcome.durable = written
                outcome.seconds = time.perf_counter() - started
        self._broken = outcome.error
        return outcome

    def _work(self) -> None:
        while True:
            group = self._todo.get()
            if group is None:
                return
            self._finished.append(self._commit(group))

    def _record(self, outcome: _Outcome) -> None:
        for item in outcome.group:
            self._queued_bytes -= len(item.data)
        if outcome.durable:
            self.stats.syncs += 1
            self.stats.sync_seconds += outcome.seconds
        error = outcome.error
        for item in outcome.group[:outcome.durable]:
            f = item.files
            assert f is not None
            if item.size_got is not None:
                self.stats.wrong_size(f"{f.file}: asked {item.sidecar.image.requested}, "
                                      f"got {item.size_got}")
            try:
                self.ledger.done(item.job.job_id, f.file, f.size, f.sha256, f.sidecar_size,
                                 size_got=item.size_got)
            except OutputError as exc:
                # A full disk: the ledger still writes into its reserve (and says so each
                # time), so every durable job of the group gets its line before the batch stops.
                error = error or exc
                continue
            self.stats.done += 1
            self.stats.bytes += f.size
        if error is not None and self._failed is None:
            # The rest is not durable: those jobs stay 'generated', and the next run fetches
            # them again.
            self._failed = error
            if self.on_error is not None:
                self.on_error(error)
            else:
                raise error
