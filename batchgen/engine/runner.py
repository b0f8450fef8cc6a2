"""One batch from manifest to files: run, collect and retry, resumable at any instant.

The runner is the composition root. Before anything is sent it locks the batch folder,
replays the ledger, checks the whole manifest against it in one pass (no job may write over
another's file) and checks that the folder was made against the same target (provider, host,
model, simulated or not). Then it follows the tasks an earlier run left at the provider
(oldest first), streams the manifest and submits what is not done yet, and finally redoes the
jobs whose task the provider forgot. Every part it wires together can be given instead (API
and image transports, key, clock, writer, reporter), so tests and other front ends inject
rather than impersonate. It owns the task group around the scheduler, the group commit, the
periodic fsync and the two-stage stop (``Batch.stop``, which Ctrl-C and SIGTERM call, and
``stop_after``); it prints nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import anyio
import httpx
from anyio.lowlevel import checkpoint

from batchgen.engine.budget import budget_for
from batchgen.engine.clock import Clock, LoopClock
from batchgen.engine.collector import Collector
from batchgen.engine.commit import Committer
from batchgen.engine.derived import Rederiver
from batchgen.engine.downloads import DownloadTurns
from batchgen.engine.events import (Checking, Leaving, PossiblyCreated, Redo, Redoing, Reporter,
                                    Silent, Starting, Stopping)
from batchgen.engine.polling import PollPlanner
from batchgen.engine.scheduler import Outstanding, Scheduler
from batchgen.engine.stats import RunStats
from batchgen.engine.stream import JobStream, manifest_counts
from batchgen.engine.summary import Pacing, RunMode, RunOutcome, RunSummary
from batchgen.errors import BatchgenError, BatchStopped, BudgetReached, FolderMismatch, OutputError, UsageError
from batchgen.job import Failure, Job, JobState
from batchgen.manifest import Manifest, load_manifest
from batchgen.manifest.plan import plan_steps
from batchgen.manifest.shards import Shard, ShardCounter
from batchgen.provider.client import ClientOptions, ProviderClient, submits_for
from batchgen.provider.limits import Limits
from batchgen.provider.targets import ApiKey, ApiTarget, resolve_target
from batchgen.storage.diff import FolderDiff
from batchgen.storage.folder import BatchFolder, check_batch_folder
from batchgen.storage.identity import RunRecord, Target
from batchgen.storage.ledger import JobRecord, Ledger, has_ledger
from batchgen.storage.live import LiveStatus
from batchgen.storage.mirror import EVERY as MIRROR_EVERY
from batchgen.storage.mirror import LedgerMirror
from batchgen.storage.writer import Writer

__all__ = ["Batch", "RunMode", "RunOptions", "RunOutcome", "RunSummary", "run_batch"]

T = TypeVar("T")


@dataclass
class RunOptions:
    """How to run a batch; ``None`` means "as the manifest says", or the default part.

    The parts (``api_transport``, ``image_transport``, ``api_key``, ``clock``, ``writer``,
    ``reporter``) replace what the runner would build: a simulator in-process is given as
    its two transports and any key.
    """

    output: Path | None = None
    concurrency: int | None = None
    rate_limit: float | None = None
    base_url: str | None = None
    max_jobs: int | None = None
    max_cost: float | None = None  # the batch's budget (--max-cost), over the manifest's max_cost
    handle_signals: bool = False   # two-stage Ctrl-C / SIGTERM (the CLI turns it on)
    durable: bool = True           # images and sidecars fsynced (group-committed) before "done"
    stop_after: float | None = None  # after the first stop, leave at once this many seconds later
    include_rejected: bool = False  # retry: also requests the provider rejected
    simulated: bool = False        # the transports are a simulator's: recorded in the folder
    adopt: bool = False            # go on in a folder made against another target
    client: ClientOptions | None = None
    poll: PollPlanner | None = None
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # holds the API key
    api_transport: httpx.AsyncBaseTransport | None = None
    image_transport: httpx.AsyncBaseTransport | None = None
    api_key: ApiKey | None = field(default=None, repr=False)
    clock: Clock | None = None
    writer: Writer | None = None
    reporter: Reporter | None = None
    #: run one shard of the jobs (``--shard I/N``): its own ledger and lock in the folder, and
    #: its share of the manifest's concurrency and rate_limit (given ones are this shard's)
    shard: Shard | None = None
    #: the store's copies of the ledger (``--output s3://...``: the ledger lives in the local
    #: ``output`` folder, the images go through ``writer`` to ``location``)
    mirror: LedgerMirror | None = None
    location: str | None = None  # where the images are, when not in ``output`` (a store URL)


def share_of(total: int, shard: Shard | None) -> int:
    """One shard's share of an account-wide limit on tasks in flight: the shares add up to
    ``total`` (the first ``total % N`` shards take one more), and none is below 1."""
    if shard is None or shard.count <= 1:
        return total
    base, extra = divmod(total, shard.count)
    return max(1, base + (1 if shard.index < extra else 0))


class Batch:
    """A manifest bound to its batch folder. ``await Batch(m).run()`` from Python."""

    def __init__(self, manifest: Manifest | str | Path, options: RunOptions | None = None) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.options = options or RunOptions()
        self.folder = Path(self.options.output or self.manifest.output)
        self._running: _Running | None = None

    # -- public ---------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Submit everything not done yet and collect it; resumes whatever an earlier run left."""
        return await self._execute(RunMode.RUN)

    async def collect(self) -> RunSummary:
        """Only poll and download tasks already submitted (including timed-out ones)."""
        return await self._execute(RunMode.COLLECT)

    async def retry(self) -> RunSummary:
        """Put failed (and expired) jobs back, then run."""
        return await self._execute(RunMode.RETRY)

    def stop(self) -> None:
        """Stop the running batch in two stages, as Ctrl-C and SIGTERM do.

        The first call: no new submit leaves (one already on the wire may finish), every wait
        for a turn or a pause ends at once, and the tasks in flight are still polled and saved.
        The second (or ``stop_after`` seconds after the first): leave at once. The ledger is
        intact either way, and the same command resumes. Call it from the run's event loop.
        """
        running = self._running
        if running is None:
            return
        scheduler = running.scheduler
        if not scheduler.interrupted:
            scheduler.interrupted = True
            scheduler.stop_submitting()
            running.reporter.notice(Stopping(scheduler.stats.in_flight))
            running.stopping.set()
        elif not running.leaving:
            running.leaving = True
            running.reporter.notice(Leaving())
            scheduler.abort()

    # -- assembly -------------------------------------------------------------------------

    def _target(self) -> tuple[ApiTarget, ApiKey]:
        m, o = self.manifest, self.options
        if o.base_url:
            origin = "--base-url"
        elif m.base_url:
            origin = f"base_url in {m.path}"
        else:
            origin = None
        target = resolve_target(m.provider, o.base_url or m.base_url, m.api_key_env, origin)
        key = o.api_key if o.api_key is not None else target.read_key(o.environ)
        return target, key

    def _provider(self, target: ApiTarget, key: ApiKey, clock: Clock, limits: Limits,
                  downloads: int) -> ProviderClient:
        o = self.options
        options = o.client or ClientOptions(max_connections=max(4, min(64, limits.tasks.ceiling // 8)))
        if options.image_connections is None:
            options = replace(options, image_connections=downloads)
        return ProviderClient(target, key, options=options, limits=limits, transport=o.api_transport,
                              image_transport=o.image_transport, sleep=clock.sleep, now=clock.now)

    # -- the work -------------------------------------------------------------------------

    async def _execute(self, mode: RunMode) -> RunSummary:
        m, o = self.manifest, self.options
        max_cost = o.max_cost if o.max_cost is not None else m.max_cost
        if max_cost is not None and m.price_per_image is None:
            raise UsageError(f"--max-cost needs price_per_image in {m.path}: the budget is "
                             f"counted in images at that price")
        clock = o.clock or LoopClock()
        started = clock.now()
        target, key = self._target()  # no key: refused before anything exists on disk
        identity = Target(target.provider, target.host, m.model, o.simulated)
        reporter = o.reporter or Silent()
        shard = o.shard if o.shard is not None and o.shard.count > 1 else None
        writer = o.writer or BatchFolder(self.folder, durable=o.durable, shard=shard)
        check_batch_folder(self.folder)  # somebody else's files are never written into
        reporter.notice(Checking(str(m.path), m.size))
        ledger = adopted = diff = None
        summary: RunSummary | None = None
        if o.mirror is not None:  # the store's copies, from the last run anywhere, in .store/
            await anyio.to_thread.run_sync(o.mirror.fetch, self.folder)
        if has_ledger(self.folder):  # a big one takes seconds: Ctrl-C gets in
            ledger = await _in_steps(Ledger.opening(self.folder, m.name, wall=clock.wall,
                                                    shard=shard))
        try:
            if ledger is not None:
                adopted = self._check_target(ledger, identity)  # before the long check
                diff = FolderDiff(ledger, writer.image_file)
            observe = diff.add if diff is not None else None
            counter = ShardCounter(shard.count, observe) if shard is not None else None
            # The whole manifest is valid, and no job writes over another's file, before
            # anything is sent.
            plan = await _in_steps(plan_steps(m, observe=counter.observe if counter else observe))
            planned = counter.tally.jobs[shard.index] if shard is not None else plan.jobs
            if ledger is None:
                ledger = Ledger.open(self.folder, m.name, wall=clock.wall, shard=shard)
            if diff is not None:
                diff.finish()
                diff.raise_for_clashes()
            if getattr(writer, "remote", False):
                await anyio.to_thread.run_sync(writer.prepare)
            else:
                writer.prepare()
            if ledger.needs_compaction():
                ledger.compact()
            if diff is not None:
                ledger.record_membership()
            stuck, requeued = self._requeue_failed(ledger, mode)
            counts = manifest_counts(ledger, planned)
            if mode is RunMode.RETRY and not stuck and not requeued:
                return self._nothing_to_retry(ledger, planned, clock.now() - started)
            to_submit = 0 if mode is RunMode.COLLECT else counts.todo
            if o.max_jobs is not None:
                to_submit = min(to_submit, o.max_jobs)
            goal = counts.done + counts.outstanding + to_submit
            concurrency = o.concurrency or share_of(m.concurrency, shard)
            rate_limit = o.rate_limit or (m.rate_limit / shard.count if shard is not None
                                          and m.rate_limit else m.rate_limit)
            budget = budget_for(ledger, self.folder, max_cost, m.price_per_image, shard)
            # The folder's record is of the whole batch: a shard's run plans every job.
            ledger.record_run(RunRecord(
                at=clock.wall(), mode=mode.value, target=identity, planned=plan.jobs,
                goal=goal if shard is None else plan.jobs,
                manifest=os.path.abspath(m.path), output=o.location or os.path.abspath(self.folder),
                base_url=None if o.simulated else o.base_url, max_jobs=o.max_jobs,
                adopted=adopted, shard=str(shard) if shard is not None else None,
                price=m.price_per_image, max_cost=max_cost))
            reporter.notice(Starting(
                mode=mode.value, batch=m.name, folder=self.folder, target=identity,
                planned=planned, done=counts.done, to_submit=to_submit,
                to_collect=sum(1 for _ in ledger.outstanding()), failed=counts.failed,
                vanished=diff.vanished if diff else 0, renamed=diff.renamed if diff else 0,
                max_jobs=o.max_jobs, adopted=adopted,
                shard=str(shard) if shard is not None else None,
                shard_source=shard.source.value if shard is not None else None,
                concurrency=concurrency if shard is not None else None, location=o.location,
                spend=budget.spend() if budget is not None else None,
                share_left=budget.left() if budget is not None and budget.share else None,
                estimate_seconds=plan.seconds_for(to_submit), cost=plan.cost_for(to_submit)))
            possibly_created = counts.submitting
            stats = RunStats(planned=planned, goal=goal, already_done=counts.done, started=started)
            live = LiveStatus(self.folder, ledger, wall=clock.wall)  # status.js, for a viewer
            live.progress = stats
            created_before = ledger.stats.tasks_created
            maybe_before = ledger.stats.maybe_duplicated
            limits = Limits(concurrency, rate_limit, now=clock.now,
                            parallel=(o.client or ClientOptions()).parallel_submits
                            or submits_for(concurrency))
            stats.pace = limits
            downloads = DownloadTurns(max(4, min(64, concurrency)))
            async with self._provider(target, key, clock, limits, downloads.slots) as provider:
                committer = Committer(ledger, writer, stats, clock)
                rederiver = Rederiver(writer, ledger)
                collector = Collector(provider, ledger, writer, o.poll or PollPlanner(), stats, clock,
                                      model=m.model, batch=m.name, task_timeout=m.task_timeout,
                                      downloads=downloads, committer=committer)
                scheduler = Scheduler(provider, ledger, collector, stats, limits=limits, model=m.model,
                                      concurrency=concurrency, max_submits=o.max_jobs,
                                      submit_grace=provider.options.timeout,
                                      renew=mode is RunMode.RETRY, budget=budget,
                                      rederive=rederiver.run)
                committer.on_error = lambda exc: scheduler.abort(exc, grace=provider.options.timeout)
                stream = JobStream(m, ledger, writer, stats, submit=mode is not RunMode.COLLECT,
                                   shard=shard)
                if possibly_created and mode is not RunMode.COLLECT:
                    reporter.notice(PossiblyCreated(possibly_created))
                redone: dict[str, Redo] = {}
                running = self._running = _Running(scheduler, reporter, anyio.Event())
                try:
                    async with anyio.create_task_group() as group:
                        group.start_soon(committer.run)  # and the ledger's fsync every second
                        group.start_soon(_refresh_every, live, ledger, limits, clock, 1.0)
                        group.start_soon(reporter.watch, stats)
                        if o.mirror is not None:
                            group.start_soon(_copy_every, o.mirror, ledger, clock, MIRROR_EVERY)
                        if o.handle_signals and threading.current_thread() is threading.main_thread():
                            group.start_soon(_two_stage_interrupt, self)
                        if o.stop_after is not None:
                            group.start_soon(self._leave_after, running, o.stop_after, clock)
                        try:
                            await scheduler.run(self._outstanding(ledger), stream)
                            if mode is not RunMode.COLLECT:
                                await self._redo(ledger, scheduler, stats, reporter,
                                                 stuck if mode is RunMode.RETRY else set(), redone)
                        finally:
                            group.cancel_scope.cancel()
                finally:
                    self._running = None
                    committer.close()  # the last saves made durable and recorded done
                    live.close()
            with anyio.CancelScope(shield=True):
                if ledger.needs_compaction():
                    ledger.compact()
            summary = self._summary(ledger, planned, stats, scheduler, stream, clock.now() - started)
            summary.shard = str(shard) if shard is not None else None
            summary.location = o.location
            summary.possibly_created = possibly_created
            summary.syncs, summary.sync_seconds = stats.syncs, stats.sync_seconds
            summary.mode = mode
            summary.goal = goal
            summary.max_jobs = o.max_jobs
            summary.spend = budget.spend() if budget is not None else None
            summary.rederived = rederiver.rewritten
            summary.adopted = adopted is not None
            summary.redone = sum(why is Redo.FORGOTTEN for why in redone.values())
            summary.resubmitted_stuck = sum(why is Redo.STUCK for why in redone.values())
            summary.redownloaded = sum(1 for job_id in stream.repaired if job_id not in redone
                                       and ledger.records[job_id].state == JobState.DONE)
            summary.tasks_created = ledger.stats.tasks_created - created_before
            summary.maybe_duplicated = ledger.stats.maybe_duplicated - maybe_before
            if diff is not None and diff.renamed:
                summary.renamed = diff.renamed
                first = diff.renamed_sample[0]
                summary.renamed_example = (first.old, first.new)
            report = limits.report()
            summary.pacing = Pacing(report.ceiling, report.limit_min, report.limit_median,
                                    report.limit_max, report.refusals, report.window,
                                    report.window_learned, report.retries)
        finally:
            if ledger is not None:
                ledger.close()
                if o.mirror is not None:  # the last copy: the store's readers see the end
                    with anyio.CancelScope(shield=True):
                        copied = await _copy_ledger(o.mirror, ledger)
                    if not copied and summary is not None and o.mirror.last_error is not None:
                        summary.copy_failed = str(o.mirror.last_error)
        if scheduler.fatal is not None and not isinstance(scheduler.fatal, BatchStopped):
            raise scheduler.fatal
        return summary

    def _check_target(self, ledger: Ledger, current: Target) -> Target | None:
        """Refuse a folder made against another target, unless told to adopt it; returns the
        folder's old target when adopted."""
        recorded = ledger.target
        if recorded is None or recorded == current:
            return None
        if (ledger.stats.tasks_created + ledger.others.tasks_created == 0
                and not ledger.counts()[JobState.DONE]):
            return None  # nothing was ever made there (e.g. a provider never reached): no provenance
        if self.options.adopt:
            return recorded
        done = ledger.counts()[JobState.DONE]
        fields = ", ".join(recorded.differences(current))
        raise FolderMismatch(
            f"{self.folder} holds a batch made against {_describe(recorded)}; this run targets "
            f"{_describe(current)} ({fields} differ). Its {done} done image(s) would pass for "
            f"this target's. Use another output folder, or adopt the folder if you mean it "
            f"(its images keep their own provenance in their sidecars).",
            folder=self.folder, recorded=recorded, current=current, done=done)

    async def _leave_after(self, running: _Running, seconds: float, clock: Clock) -> None:
        """``stop_after``: once stopping, leave at once after ``seconds`` (a grace period)."""
        await running.stopping.wait()
        await clock.sleep(seconds)
        if self._running is running:
            self.stop()

    def _outstanding(self, ledger: Ledger) -> list[Outstanding]:
        found = []
        for job_id, rec in ledger.outstanding():
            job = rec.job(job_id)
            if job is not None and rec.task_id:
                # A generated task is finished: ask for a fresh URL at once.
                found.append(Outstanding(job, rec.task_id, rec.get("submitted_at"),
                                         finished=rec.state == JobState.GENERATED))
        return found

    def _requeue_failed(self, ledger: Ledger, mode: RunMode) -> tuple[set[str], int]:
        """Put failures back as the mode says; returns (timed-out tasks followed again, jobs
        put back to pending).

        Every mode that submits redoes a job whose task the provider forgot (there is nothing
        left to follow). ``collect`` and ``retry`` poll a timed-out task once more (its age is
        kept, so once is all it gets); ``retry`` submits it anew afterwards if it is still not
        finished, and puts every other retryable failure back (rejected requests too, with
        ``include_rejected``). Jobs no longer in the manifest are never submitted again.
        """
        stuck: set[str] = set()
        requeued = 0
        for job_id, rec in list(ledger.failures()):
            failure = rec.failure
            if failure is Failure.TASK_NOT_FOUND and mode is not RunMode.COLLECT and rec.seen:
                ledger.reset(job_id)
                requeued += 1
            elif failure is not None and failure.follow and rec.task_id and mode is not RunMode.RUN:
                ledger.follow_again(job_id, rec.task_id, submitted_at=self._task_age(rec))
                stuck.add(job_id)
            elif (mode is RunMode.RETRY and rec.seen
                  and (rec.get("retryable", True) or self.options.include_rejected)):
                ledger.reset(job_id)
                requeued += 1
        return stuck, requeued

    def _task_age(self, rec: JobRecord) -> float | None:
        """When a timed-out task was submitted (wall time), for a ledger that did not keep it."""
        if rec.get("submitted_at") is not None:
            return None
        failed_at = rec.get("failed_at")
        return failed_at - self.manifest.task_timeout if isinstance(failed_at, (int, float)) else None

    async def _redo(self, ledger: Ledger, scheduler: Scheduler, stats: RunStats, reporter: Reporter, stuck: set[str],
                    redone: dict[str, Redo]) -> None:
        """Submit anew, once per run, the jobs whose task the provider forgot and (retry) the
        timed-out tasks still unfinished after one more poll."""
        if not scheduler.submitting or scheduler.interrupted or scheduler.fatal is not None:
            return
        jobs: list[Job] = []
        for job_id, rec in list(ledger.failures()):
            failure = rec.failure
            why = (Redo.FORGOTTEN if failure is Failure.TASK_NOT_FOUND
                   else Redo.STUCK if failure is Failure.TIMEOUT and job_id in stuck else None)
            job = rec.job(job_id) if why is not None and rec.seen else None
            if job is None:
                continue
            redone[job_id] = why
            stats.unfail(rec.label)
            ledger.reset(job_id)
            jobs.append(job)
        for why in Redo:
            count = sum(w is why for w in redone.values())
            if count:
                reporter.notice(Redoing(count, why))
        if jobs:
            await scheduler.run([], jobs)

    def _nothing_to_retry(self, ledger: Ledger, planned: int, elapsed: float) -> RunSummary:
        """``retry`` with no failed job to run again: says so, and sends nothing."""
        counts = manifest_counts(ledger, planned)
        shard = self.options.shard
        s = RunSummary(batch=self.manifest.name, folder=self.folder, planned=planned,
                       shard=str(shard) if shard is not None and shard.count > 1 else None,
                       done=counts.done, already_done=counts.done, outstanding=counts.outstanding,
                       pending=counts.todo, mode=RunMode.RETRY, elapsed=elapsed,
                       nothing_to_retry=True, goal=counts.done)
        for rec in ledger.records.values():
            if rec.seen and rec.state == JobState.FAILED:
                s.failed += 1
                s.failures[rec.label] += 1
                s.retryable_failed += bool(rec.get("retryable", True))
        return s

    def _summary(self, ledger: Ledger, planned: int, stats: RunStats, scheduler: Scheduler,
                 stream: JobStream, elapsed: float) -> RunSummary:
        s = RunSummary(batch=self.manifest.name, folder=self.folder, planned=planned,
                       submitted=stats.submitted + stats.refused, refused=stats.refused,
                       collected=stats.done, already_done=stats.already_done,
                       interrupted=scheduler.interrupted, elapsed=elapsed,
                       size_mismatched=stats.size_mismatched, size_example=stats.size_example)
        counted = 0
        for job_id, rec in ledger.records.items():
            if not rec.seen:  # no longer in the manifest: reported, never counted
                s.vanished += 1
                if len(s.vanished_sample) < 3:
                    s.vanished_sample.append(job_id)
                continue
            counted += rec.state != JobState.PENDING
            if rec.state == JobState.DONE:
                s.done += 1
            elif rec.state == JobState.FAILED:
                s.failed += 1
                s.failures[rec.label] += 1
                s.retryable_failed += bool(rec.get("retryable", True))
            elif rec.state.outstanding:
                s.outstanding += 1
        s.pending = max(0, planned - counted)
        why: BatchgenError | None = scheduler.stopped or scheduler.fatal
        if why is not None:
            s.stopped = str(why)
        if isinstance(why, BatchStopped):
            s.stop_kind = why.kind
        s.budget_reached = isinstance(why, BudgetReached)
        s.output_failed = isinstance(scheduler.fatal, OutputError)
        return s


async def _in_steps(steps: Generator[int, None, T]) -> T:
    """Drive blocking work that comes in steps (the plan's pass, a ledger's replay), letting
    the event loop in between: a Ctrl-C during the check of a big batch stops it at once."""
    try:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            await checkpoint()
    finally:
        steps.close()


def _describe(target: Target) -> str:
    where = "the simulator" if target.simulated else target.provider
    return f"{target.model} on {where} ({target.host})"


async def _copy_ledger(mirror: LedgerMirror, ledger: Ledger) -> bool:
    relative = ledger.path.relative_to(ledger.folder).as_posix()
    return await anyio.to_thread.run_sync(mirror.push, ledger.path, relative)


async def _copy_every(mirror: LedgerMirror, ledger: Ledger, clock: Clock, seconds: float) -> None:
    """Now and then, copy the ledger to the store (a failure is tried again the next time;
    the local ledger is the record)."""
    while True:
        await clock.sleep(seconds)
        await _copy_ledger(mirror, ledger)


async def _refresh_every(live: LiveStatus, ledger: Ledger, limits: Limits, clock: Clock,
                         seconds: float) -> None:
    """Now and then: rewrite the live status file (a small read of the ledger's tail and one
    small atomic write) and put the run's limits in the lock file, for ``status`` to show.
    Nothing waits for either, and a failure never stops the batch."""
    while True:
        await clock.sleep(seconds)
        ledger.note_run(limits.snapshot().to_json())
        live.refresh()


@dataclass
class _Running:
    """The run in progress, for ``Batch.stop``."""

    scheduler: Scheduler
    reporter: Reporter
    stopping: anyio.Event
    leaving: bool = False


async def _two_stage_interrupt(batch: Batch) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            batch.stop()


def run_batch(manifest: str | Path | Manifest, mode: RunMode | str = RunMode.RUN,
              options: RunOptions | None = None) -> RunSummary:
    """Blocking convenience for scripts: ``run_batch("m.yaml")``. In a notebook, await Batch."""
    batch = Batch(manifest, options)
    method = {RunMode.RUN: batch.run, RunMode.COLLECT: batch.collect,
              RunMode.RETRY: batch.retry}[RunMode(mode)]
    return anyio.run(method)
