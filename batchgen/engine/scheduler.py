"""Keep the provider's slots full: submit, follow and save jobs in one anyio task group.

The limit that matters is tasks in flight at the provider (submitted, not seen finished). It
adapts to what the provider takes and lives in the run's ``Limits`` (provider/limits.py), where
every submit waits its turn; a slot frees the moment a poll sees its task finished (or, while
a refused poll waits the provider's Retry-After, once the task should have finished). A second
limiter bounds jobs alive in this process (waiting to submit, in flight, downloading), so a
million-job manifest streams through in constant memory. The task id is in the ledger before
anything depends on it; a job's own failure is recorded, never raised.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from batchgen.engine.budget import Budget, Hold
from batchgen.engine.collector import Collector, Renew
from batchgen.engine.derived import Rederive
from batchgen.engine.polling import TaskClock
from batchgen.engine.stats import RunStats
from batchgen.errors import (
    BatchgenError,
    BatchStopped,
    JobRejected,
    OutputError,
    ProviderError,
    StopKind,
    TransientError,
)
from batchgen.job import Failed, Failure, Job
from batchgen.provider.base import Provider
from batchgen.provider.client import SubmitWithdrawn
from batchgen.provider.limits import Limits
from batchgen.storage.ledger import Ledger

__all__ = ["Outstanding", "Scheduler"]

log = logging.getLogger("batchgen.engine.scheduler")

_YIELD_EVERY = 256


class _Ticket:
    """One job's claim on the live limiter; the task it holds in flight, if any."""

    __slots__ = ("hold", "task_id")

    def __init__(self) -> None:
        self.task_id: str | None = None
        self.hold: Hold | None = None  # its share of the budget until its task is recorded


@dataclass(frozen=True, slots=True)
class Outstanding:
    """A task already at the provider (from an earlier run): collect it before submitting more."""

    job: Job
    task_id: str
    submitted_at: float | None  # wall clock, from the ledger
    finished: bool = False      # known to be finished: poll at once


class Scheduler:
    """Runs jobs through submit -> follow -> save with at most ``limits`` tasks in flight.

    ``renew`` (retry): a followed task the provider no longer has, or whose image comes back
    broken again, is submitted anew instead of failing its job.
    """

    def __init__(self, provider: Provider, ledger: Ledger, collector: Collector,
                 stats: RunStats, *, limits: Limits, model: str, concurrency: int,
                 max_submits: int | None = None, submit_grace: float = 30.0,
                 renew: bool = False, budget: Budget | None = None,
                 rederive: Callable[[Rederive], Awaitable[None]] | None = None) -> None:
        self.provider = provider
        self.budget = budget  # max_cost: every submit holds its share first (engine/budget.py)
        self.rederive = rederive  # a done job's caption and sidecar fields (engine/derived.py)
        self.budget_reached = False
        self.ledger = ledger
        self.collector = collector
        self.stats = stats
        self.limits = limits
        self.model = model
        self.live = anyio.CapacityLimiter(2 * concurrency + 16)
        self.max_submits = max_submits
        self.renew = renew
        self.stopped: BatchgenError | None = None  # why submitting stopped (auth, balance...)
        self.fatal: BatchgenError | None = None    # what stopped the whole batch
        self.interrupted = False
        self._stop_submitting = anyio.Event()
        self._producer: anyio.CancelScope | None = None
        self._group: TaskGroup | None = None
        # Submits waiting for their answer: an abort gives them ``submit_grace`` seconds to
        # learn (and record) their task id, since cancelling one may leave a paid task unknown.
        self._submits: set[anyio.CancelScope] = set()
        self.submit_grace: float | None = None
        self._request_timeout = submit_grace

    # -- control -------------------------------------------------------------------------------

    def stop_submitting(self, why: BatchgenError | None = None) -> None:
        """No new submits (every wait for a turn ends now); tasks in flight are still followed
        and saved."""
        if why is not None and self.stopped is None:
            self.stopped = why
        self._stop_submitting.set()
        self.limits.stop()
        if self._producer is not None:
            self._producer.cancel()

    def abort(self, why: BatchgenError | None = None, grace: float = 0.0) -> None:
        """Cancel every job (the ledger already holds what matters).

        Submits already sent get ``grace`` seconds to bring back their task id; 0 leaves at once
        (the next run reports those jobs as possibly created).
        """
        if why is not None and self.fatal is None:
            self.fatal = why
        self.stop_submitting()
        self.submit_grace = grace if self.submit_grace is None else min(grace, self.submit_grace)
        for scope in self._submits:
            self._limit(scope)
        if self._group is not None:
            self._group.cancel_scope.cancel()

    def _limit(self, scope: anyio.CancelScope) -> None:
        if self.submit_grace is not None:
            if self.submit_grace <= 0:
                scope.cancel()
            else:
                scope.deadline = min(scope.deadline, anyio.current_time() + self.submit_grace)

    @property
    def submitting(self) -> bool:
        return not self._stop_submitting.is_set()

    # -- running -----------------------------------------------------------------------------

    async def run(self, outstanding: Iterable[Outstanding],
                  todo: Iterable[Job | Outstanding | Rederive]) -> None:
        """Collect ``outstanding`` (oldest first), then submit ``todo`` until done or stopped."""
        async with anyio.create_task_group() as group:
            self._group = group
            with anyio.CancelScope() as scope:
                self._producer = scope
                if self._stop_submitting.is_set():
                    scope.cancel()
                try:
                    await self._produce(group, outstanding, todo)
                except OutputError as exc:  # the job stream writes the ledger too
                    self.abort(exc, grace=self._grace())
            self._producer = None
        self._group = None

    async def _produce(self, group: TaskGroup, outstanding: Iterable[Outstanding],
                       todo: Iterable[Job | Outstanding | Rederive]) -> None:
        for item in outstanding:
            group.start_soon(self._resume, item, await self._admit())
        if not self.submitting:
            return
        count = started = 0
        for job in todo:
            count += 1
            if count % _YIELD_EVERY == 0:
                await anyio.sleep(0)
            if isinstance(job, Outstanding):
                group.start_soon(self._resume, job, await self._admit())
                continue
            if isinstance(job, Rederive):
                if self.rederive is not None:
                    await self.rederive(job)
                continue
            if self.max_submits is not None and started >= self.max_submits:
                break
            if self.budget is not None:
                if self.budget_reached:
                    continue  # the rest of the stream: repairs and rewrites only, nothing paid
                if not await self.budget.wait_for_room():
                    self._out_of_budget()
                    continue
            ticket = await self._admit()
            if not self.submitting:
                self._release(ticket)
                return
            if self.budget is not None:
                ticket.hold = self.budget.hold()
                if ticket.hold is None:  # taken while this one waited for its admission
                    self._release(ticket)
                    self._out_of_budget()
                    continue
            started += 1
            group.start_soon(self._submit_and_follow, job, ticket)

    def _out_of_budget(self) -> None:
        """The budget pays for no more task: no new submit, while the stream goes on for the
        files a run fixes without paying (a repair from a known task, a rewritten caption),
        and the tasks in flight are still saved."""
        assert self.budget is not None
        self.budget_reached = True
        if self.stopped is None:
            self.stopped = self.budget.reached()
        self._stop_submitting.set()

    async def _admit(self) -> _Ticket:
        ticket = _Ticket()
        await self.live.acquire_on_behalf_of(ticket)
        return ticket

    def _free_slot(self, ticket: _Ticket) -> None:
        if ticket.task_id is not None:
            self.limits.ended(ticket.task_id)   # a no-op when a poll already saw it finished
            ticket.task_id = None

    def _release(self, ticket: _Ticket) -> None:
        self._free_slot(ticket)
        if ticket.hold is not None:
            ticket.hold.release()
        self.live.release_on_behalf_of(ticket)

    async def _submit_and_follow(self, job: Job, ticket: _Ticket) -> None:
        try:
            await self._submit(job, ticket)
        except OutputError as exc:
            self.abort(exc, grace=self._grace())
        finally:
            self._release(ticket)

    async def _submit(self, job: Job, ticket: _Ticket) -> None:
        if not self.submitting:  # stopped between admission and now: leave the job as it is
            return
        recorded = False

        def sending() -> None:
            # Right before the request goes out, not while it waits for its turn: a crash in
            # a long wait must not look like a task that may exist without its id.
            nonlocal recorded
            if not recorded:
                try:
                    self.ledger.submitting(job)
                except OutputError:
                    # A full disk: the line may be written (into the ledger's reserve), yet
                    # nothing is sent, so the job goes back to pending, not 'maybe created'.
                    with contextlib.suppress(OutputError):
                        self.ledger.reset(job.job_id)
                    raise
                recorded = True

        try:
            with anyio.CancelScope(shield=True) as scope:
                self._submits.add(scope)
                self._limit(scope)
                try:
                    sub = await self.provider.submit(self.model, job.request,
                                                     still_wanted=lambda: self.submitting,
                                                     sending=sending)
                finally:
                    self._submits.discard(scope)
            if scope.cancelled_caught:  # the grace ran out: the job stays 'submitting'
                await checkpoint()
                return
        except SubmitWithdrawn as exc:
            # Stopped while it waited for its turn: nothing (more) was sent.
            if exc.maybe_count:
                self.collector.record_failure(job, Failed(
                    Failure.SUBMIT_FAILED, "stopped between tries; an earlier try may have created "
                    "a task at the provider without its id"), task_id=None,
                    maybe_duplicated=exc.maybe_count)
            elif recorded:
                self.ledger.reset(job.job_id)
            return
        except BatchStopped as exc:
            # Nothing was created: the job goes back to pending for the next run.
            if recorded:
                self.ledger.reset(job.job_id)
            self._stopped_by(exc)
            return
        except JobRejected as exc:
            self.collector.record_failure(job, Failed(Failure.REJECTED, str(exc), exc.reason),
                                          task_id=None)
            return
        except ProviderError as exc:
            maybe = isinstance(exc, TransientError) and exc.maybe_created
            note = " (a task may have been created at the provider without its id)" if maybe else ""
            count = exc.maybe_count if maybe else 0
            self.collector.record_failure(job, Failed(Failure.SUBMIT_FAILED, f"{exc}{note}"),
                                          task_id=None, maybe_duplicated=count)
            return
        except OutputError:
            raise
        except Exception as exc:  # an answer the client did not foresee: this job fails, not the batch
            log.info("submit of job %s failed unexpectedly", job.job_id, exc_info=True)
            self.collector.record_failure(job, Failed(
                Failure.SUBMIT_FAILED, f"unexpected answer ({type(exc).__name__}: {str(exc)[:200]}); "
                f"a task may have been created at the provider without its id"),
                task_id=None, maybe_duplicated=1)
            return
        ticket.task_id = sub.task_id  # in flight at the limits since they saw it accepted
        self.ledger.submitted(job.job_id, sub.task_id, sub.attempts, sub.maybe_duplicated)
        if ticket.hold is not None:  # the ledger counts the task now
            ticket.hold.release()
        self.stats.submitted += 1
        await self._follow_and_save(job, sub.task_id, self.collector.clock_for(None), ticket)

    async def _resume(self, item: Outstanding, ticket: _Ticket) -> None:
        try:
            self.limits.adopt(item.task_id)
            ticket.task_id = item.task_id
            clock = self.collector.clock_for(item.submitted_at)
            try:
                await self._follow_and_save(item.job, item.task_id, clock, ticket,
                                            poll_now=item.finished, renew=self.renew)
            except Renew as exc:
                if self.budget is not None and self.submitting:
                    ticket.hold = self.budget.hold()
                    if ticket.hold is None:
                        self._out_of_budget()
                if self.submitting:
                    log.info("job %s: %s; submitting it anew", item.job.job_id, exc)
                    await self._submit(item.job, ticket)
                else:
                    self.collector.record_failure(item.job, exc.failed, task_id=item.task_id)
        except OutputError as exc:
            self.abort(exc, grace=self._grace())
        finally:
            self._release(ticket)

    async def _follow_and_save(self, job: Job, task_id: str, clock: TaskClock, ticket: _Ticket,
                               poll_now: bool = False, renew: bool = False) -> None:
        try:
            result = await self.collector.follow(job, task_id, clock, poll_now=poll_now, renew=renew)
        except BatchStopped as exc:
            self._stopped_by(exc, abort=True)
            return
        finally:
            self._free_slot(ticket)  # the provider's slot is free the moment we know the task ended
        if result is None:
            return
        try:
            await self.collector.save(job, task_id, result, clock, renew=renew)
        except BatchStopped as exc:
            self._stopped_by(exc, abort=True)

    def _stopped_by(self, exc: BatchStopped, abort: bool = False) -> None:
        if self.stopped is None and self.fatal is None:  # once, not once per submit in flight
            log.warning("provider stopped the batch: %s", exc)
        if exc.kind is StopKind.BALANCE and not abort:
            self.stop_submitting(exc)
        else:
            self.abort(exc, grace=self._grace())

    def _grace(self) -> float:
        """Time a submit in flight gets to answer once the batch stops: one request's timeout."""
        return self._request_timeout
