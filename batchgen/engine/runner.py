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
import shlex
import signal
import threading
from collections import Counter
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import anyio
import httpx
from anyio.lowlevel import checkpoint

from batchgen.engine.budget import Budget, budget_for
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
from batchgen.engine.preflight import Preflight, preflight
from batchgen.engine.stream import JobStream
from batchgen.engine.summary import RunMode, RunOutcome, RunSummary
from batchgen.errors import (BatchgenError, BatchStopped, BudgetReached, FolderMismatch, OutputError,
                             UsageError)
from batchgen.job import Failure, Job, JobState
from batchgen.manifest import Manifest, load_manifest
from batchgen.manifest.shards import Shard
from batchgen.provider.client import ClientOptions, ProviderClient, submits_for
from batchgen.provider.limits import Limits
from batchgen.provider.targets import ApiKey, ApiTarget, resolve_target
from batchgen.storage.batch import JobCounts, count_jobs, place_of
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
    # Seconds between group commits; 0 makes each save durable and recorded at once, on the
    # event loop (slower on a disk, but no worker thread: a run in virtual time replays exactly).
    commit_every: float = 0.1
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
        #: where the batch lives, as every command finds it (``storage/batch.py``)
        self.place = place_of(self.manifest, output=self.options.output)
        self.folder = self.place.folder
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
        # A manifest's base_url is bound to trusted hosts; the caller's own is not.
        target = resolve_target(m.provider, o.base_url, m.api_key_env, "--base-url",
                                manifest_url=m.base_url, manifest_origin=f"base_url in {m.path}",
                                environ=o.environ, network=o.api_transport is None)
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
        """A run, step by step: open the folder, check everything before anything is sent,
        record and announce the run, do the work, then say what it did."""
        run = _Run(mode, self.options.clock or LoopClock())
        run.started = run.clock.now()
        summary: RunSummary | None = None
        try:
            self._resolve(run)            # target, key, writer: no key is refused here
            await self._open(run)         # someone else's folder refused; the ledger replayed
            await self._check(run)        # the folder's target; one pass over the manifest
            await self._prepare(run)      # the writer, compaction, membership, failures put back
            if mode is RunMode.RETRY and not run.stuck and not run.requeued:
                return self._nothing_to_retry(run)
            self._start(run)              # the run recorded in the folder and announced
            await self._work(run)         # the task group: submit, follow, save, redo
            summary = self._summary(run)
        finally:
            await self._close(run, summary)
        if run.scheduler.fatal is not None and not isinstance(run.scheduler.fatal, BatchStopped):
            raise run.scheduler.fatal
        return summary

    def _resolve(self, run: _Run) -> None:
        m, o = self.manifest, self.options
        run.max_cost = o.max_cost if o.max_cost is not None else m.max_cost
        if run.max_cost is not None and m.price_per_image is None:
            raise UsageError(f"--max-cost needs price_per_image in {m.path}: the budget is "
                             f"counted in images at that price")
        run.target, run.key = self._target()
        run.identity = Target(run.target.provider, run.target.host, m.model, o.simulated)
        run.reporter = o.reporter or Silent()
        run.shard = o.shard if o.shard is not None and o.shard.count > 1 else None
        run.writer = o.writer or BatchFolder(self.folder, durable=o.durable, shard=run.shard)

    async def _open(self, run: _Run) -> None:
        m, o = self.manifest, self.options
        self._refuse_a_second_batch()
        check_batch_folder(self.folder)  # somebody else's files are never written into
        run.reporter.notice(Checking(str(m.path), m.size))
        if o.mirror is not None:  # the store's copies, from the last run anywhere, in .store/
            await anyio.to_thread.run_sync(o.mirror.fetch, self.folder)
        if has_ledger(self.folder):  # a big one takes seconds: Ctrl-C gets in
            run.ledger = await _in_steps(Ledger.opening(self.folder, m.name, wall=run.clock.wall,
                                                        shard=run.shard))

    async def _check(self, run: _Run) -> None:
        """The folder's target, then the whole manifest valid and no job writing over another's
        file (``engine/preflight.py``), before anything is sent."""
        if run.ledger is not None:
            run.adopted = self._check_target(run.ledger, run.identity)  # before the long check
        shard = run.shard
        run.check = await _in_steps(preflight(
            self.manifest, run.ledger, shards=shard.count if shard is not None else None,
            shard_index=shard.index if shard is not None else None,
            file_of=run.writer.image_file))
        if run.ledger is None:
            run.ledger = Ledger.open(self.folder, self.manifest.name, wall=run.clock.wall, shard=shard)

    async def _prepare(self, run: _Run) -> None:
        writer, ledger = run.writer, run.ledger
        if writer.remote:
            await anyio.to_thread.run_sync(writer.prepare)
        else:
            writer.prepare()
        if ledger.needs_compaction():
            ledger.compact()
        if run.check.diff is not None:
            ledger.record_membership()
        run.stuck, run.requeued = self._requeue_failed(ledger, run.mode)
        run.counts = run.check.counts(ledger)

    def _start(self, run: _Run) -> None:
        m, o, mode, shard, counts = self.manifest, self.options, run.mode, run.shard, run.counts
        to_submit = 0 if mode is RunMode.COLLECT else counts.pending
        if o.max_jobs is not None:
            to_submit = min(to_submit, o.max_jobs)
        run.goal = counts.done + counts.at_provider + to_submit
        run.concurrency = o.concurrency or share_of(m.concurrency, shard)
        run.rate_limit = o.rate_limit or (m.rate_limit / shard.count if shard is not None
                                          and m.rate_limit else m.rate_limit)
        plan, diff = run.check.plan, run.check.diff
        budget = run.budget = budget_for(run.ledger, self.folder, run.max_cost, m.price_per_image, shard)
        # The folder's record is of the whole batch: a shard's run plans every job.
        run.ledger.record_run(RunRecord(
            at=run.clock.wall(), mode=mode.value, target=run.identity, planned=plan.jobs,
            goal=run.goal if shard is None else plan.jobs,
            manifest=os.path.abspath(m.path), output=o.location or os.path.abspath(self.folder),
            base_url=None if o.simulated else o.base_url, max_jobs=o.max_jobs,
            adopted=run.adopted, shard=str(shard) if shard is not None else None,
            price=m.price_per_image, max_cost=run.max_cost))
        run.reporter.notice(Starting(
            mode=mode.value, batch=m.name, folder=self.folder, target=run.identity,
            planned=run.check.planned, done=counts.done, to_submit=to_submit,
            to_collect=sum(1 for _ in run.ledger.outstanding()), failed=counts.failed,
            vanished=diff.vanished if diff else 0, renamed=diff.renamed if diff else 0,
            max_jobs=o.max_jobs, adopted=run.adopted,
            shard=str(shard) if shard is not None else None,
            shard_source=shard.source.value if shard is not None else None,
            concurrency=run.concurrency if shard is not None else None, location=o.location,
            spend=budget.spend() if budget is not None else None,
            share_left=budget.left() if budget is not None and budget.share else None,
            estimate_seconds=plan.seconds_for(to_submit), cost=plan.cost_for(to_submit)))
        run.possibly_created = counts.submitting
        run.created_before = run.ledger.stats.tasks_created
        run.maybe_before = run.ledger.stats.maybe_duplicated

    async def _work(self, run: _Run) -> None:
        """The task group: the tasks an earlier run left first, then the manifest's stream,
        then the jobs whose task the provider forgot; beside them the group commit, the live
        status, the progress display, the store's ledger copies and the two-stage stop."""
        m, o, mode, ledger, writer, clock = (self.manifest, self.options, run.mode, run.ledger,
                                             run.writer, run.clock)
        stats = run.stats = RunStats(planned=run.check.planned, goal=run.goal,
                                     already_done=run.counts.done, started=run.started)
        live = LiveStatus(self.folder, ledger, wall=clock.wall)  # status.js, for a viewer
        live.progress = stats
        limits = run.limits = Limits(run.concurrency, run.rate_limit, now=clock.now,
                                     parallel=(o.client or ClientOptions()).parallel_submits
                                     or submits_for(run.concurrency))
        stats.pace = limits
        downloads = DownloadTurns(max(4, min(64, run.concurrency)))
        async with self._provider(run.target, run.key, clock, limits, downloads.slots) as provider:
            committer = Committer(ledger, writer, stats, clock, interval=o.commit_every)
            rederiver = run.rederiver = Rederiver(writer, ledger)
            collector = Collector(provider, ledger, writer, o.poll or PollPlanner(), stats, clock,
                                  model=m.model, batch=m.name, task_timeout=m.task_timeout,
                                  downloads=downloads, committer=committer)
            scheduler = run.scheduler = Scheduler(
                provider, ledger, collector, stats, limits=limits, model=m.model,
                concurrency=run.concurrency, max_submits=o.max_jobs,
                submit_grace=provider.options.timeout, renew=mode is RunMode.RETRY, budget=run.budget,
                rederive=rederiver.run)
            committer.on_error = lambda exc: scheduler.abort(exc, grace=provider.options.timeout)
            stream = run.stream = JobStream(m, ledger, writer, stats,
                                            submit=mode is not RunMode.COLLECT, shard=run.shard)
            if run.possibly_created and mode is not RunMode.COLLECT:
                run.reporter.notice(PossiblyCreated(run.possibly_created))
            running = self._running = _Running(scheduler, run.reporter, anyio.Event())
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(committer.run)  # and the ledger's fsync every second
                    group.start_soon(_refresh_every, live, ledger, limits, clock, 1.0)
                    group.start_soon(run.reporter.watch, stats)
                    if o.mirror is not None:
                        group.start_soon(_copy_every, o.mirror, ledger, clock, MIRROR_EVERY)
                    if o.handle_signals and threading.current_thread() is threading.main_thread():
                        group.start_soon(_two_stage_interrupt, self)
                    if o.stop_after is not None:
                        group.start_soon(self._leave_after, running, o.stop_after, clock)
                    try:
                        await scheduler.run(self._outstanding(ledger), stream)
                        if mode is not RunMode.COLLECT:
                            await self._redo(ledger, scheduler, stats, run.reporter,
                                             run.stuck if mode is RunMode.RETRY else set(),
                                             run.redone)
                    finally:
                        group.cancel_scope.cancel()
            finally:
                self._running = None
                committer.close()  # the last saves made durable and recorded done
                live.close()
        with anyio.CancelScope(shield=True):
            if ledger.needs_compaction():
                ledger.compact()

    async def _close(self, run: _Run, summary: RunSummary | None) -> None:
        """The ledger closed and, with a store output, copied there one last time (the
        store's readers see the end)."""
        ledger, mirror = run.ledger, self.options.mirror
        if ledger is None:
            return
        ledger.close()
        if mirror is not None:
            with anyio.CancelScope(shield=True):
                copied = await _copy_ledger(mirror, ledger)
            if not copied and summary is not None and mirror.last_error is not None:
                summary.copy_failed = str(mirror.last_error)

    def _refuse_a_second_batch(self) -> None:
        """A run that would start a new batch folder while this manifest's batch is in another
        (the default output before it followed the manifest) is refused: it would pay for every
        job again. An ``--output`` given on purpose is left alone."""
        if self.options.output is not None:
            return
        other = self.place.elsewhere()
        if other is None:
            return
        manifest = os.path.abspath(self.manifest.path)
        raise UsageError(
            f"this manifest's batch is in {other}, but its output is now {self.folder} (a "
            f"manifest's default output follows the manifest, not the working directory): this "
            f"run would start a second batch there and pay for every job again. Nothing was "
            f"sent. Go on with the batch where it is: batchgen run {shlex.quote(manifest)} "
            f"--output {shlex.quote(str(other))}; or move it: mv {shlex.quote(str(other))} "
            f"{shlex.quote(str(self.folder))}")

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
            f"{self.folder} holds a batch made against {recorded.describe()}; this run targets "
            f"{current.describe()} ({fields} differ). Its {done} done image(s) would pass for "
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

    def _nothing_to_retry(self, run: _Run) -> RunSummary:
        """``retry`` with no failed job to run again: says so, and sends nothing."""
        counts, shard = run.counts, run.shard
        failures, retryable, _ = _failures(run.ledger)
        return RunSummary(
            batch=self.manifest.name, folder=self.folder, planned=run.check.planned,
            shard=str(shard) if shard is not None else None, done=counts.done,
            already_done=counts.done, outstanding=counts.at_provider, pending=counts.pending,
            failed=counts.failed, failures=failures, retryable_failed=retryable,
            mode=RunMode.RETRY, elapsed=run.clock.now() - run.started, nothing_to_retry=True,
            goal=counts.done)

    def _summary(self, run: _Run) -> RunSummary:
        """What the run did and what is left, built once from the ledger's one count."""
        o, ledger, stats, scheduler, diff = self.options, run.ledger, run.stats, run.scheduler, run.check.diff
        counts = count_jobs(ledger, run.check.planned, passed=True)
        failures, retryable, sample = _failures(ledger)
        why: BatchgenError | None = scheduler.stopped or scheduler.fatal
        report = run.limits.report()
        redone = run.redone
        return RunSummary(
            batch=self.manifest.name, folder=self.folder, planned=run.check.planned,
            done=counts.done, failed=counts.failed, pending=counts.pending,
            outstanding=counts.at_provider, submitted=stats.submitted + stats.refused,
            refused=stats.refused, collected=stats.done, already_done=stats.already_done,
            failures=failures, retryable_failed=retryable,
            tasks_created=ledger.stats.tasks_created - run.created_before,
            maybe_duplicated=ledger.stats.maybe_duplicated - run.maybe_before,
            possibly_created=run.possibly_created,
            redownloaded=sum(1 for job_id in run.stream.repaired if job_id not in redone
                             and ledger.records[job_id].state == JobState.DONE),
            redone=sum(why is Redo.FORGOTTEN for why in redone.values()),
            resubmitted_stuck=sum(why is Redo.STUCK for why in redone.values()),
            size_mismatched=stats.size_mismatched, size_example=stats.size_example,
            renamed=diff.renamed if diff is not None else 0,
            renamed_example=((diff.renamed_sample[0].old, diff.renamed_sample[0].new)
                             if diff is not None and diff.renamed else None),
            adopted=run.adopted is not None, goal=run.goal, max_jobs=o.max_jobs,
            vanished=counts.vanished, vanished_sample=sample,
            stopped=str(why) if why is not None else None,
            stop_kind=why.kind if isinstance(why, BatchStopped) else None,
            budget_reached=isinstance(why, BudgetReached),
            spend=run.budget.spend() if run.budget is not None else None,
            rederived=run.rederiver.rewritten if run.rederiver is not None else 0,
            output_failed=isinstance(scheduler.fatal, OutputError),
            interrupted=scheduler.interrupted, elapsed=run.clock.now() - run.started,
            syncs=stats.syncs, sync_seconds=stats.sync_seconds, mode=run.mode,
            shard=str(run.shard) if run.shard is not None else None, location=o.location,
            pacing=report)


def _failures(ledger: Ledger) -> tuple[Counter[str], int, list[str]]:
    """The manifest's failed jobs by reason, how many are retryable, and a few vanished jobs."""
    failures: Counter[str] = Counter()
    retryable = 0
    sample: list[str] = []
    for job_id, rec in ledger.records.items():
        if not rec.seen:
            if len(sample) < 3:
                sample.append(job_id)
        elif rec.state == JobState.FAILED:
            failures[rec.label] += 1
            retryable += bool(rec.get("retryable", True))
    return failures, retryable, sample


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
class _Run:
    """One run's state as its steps fill it in (``Batch._execute``)."""

    mode: RunMode
    clock: Clock
    started: float = 0.0
    target: ApiTarget | None = None
    key: ApiKey | None = field(default=None, repr=False)
    identity: Target | None = None
    reporter: Reporter | None = None
    shard: Shard | None = None
    writer: Writer | None = None
    ledger: Ledger | None = None
    adopted: Target | None = None
    check: Preflight | None = None
    counts: JobCounts | None = None
    stuck: set[str] = field(default_factory=set)
    requeued: int = 0
    goal: int = 0
    concurrency: int = 0
    rate_limit: float | None = None
    possibly_created: int = 0
    created_before: int = 0
    maybe_before: int = 0
    stats: RunStats | None = None
    limits: Limits | None = None
    scheduler: Scheduler | None = None
    stream: JobStream | None = None
    redone: dict[str, Redo] = field(default_factory=dict)
    max_cost: float | None = None
    budget: Budget | None = None
    rederiver: Rederiver | None = None


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
