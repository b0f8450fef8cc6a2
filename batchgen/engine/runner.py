"""One batch from manifest to files: run, collect and retry, resumable at any instant.

The runner is the composition root. It validates the whole manifest before anything is sent,
locks the batch folder, replays the ledger, follows the tasks an earlier run left at the
provider (oldest first), then streams the manifest and submits what is not done yet. Every
part it wires together can be given instead (API and image transports, key, clock, writer,
reporter), so tests and other front ends inject rather than impersonate. It owns the task
group around the scheduler, the periodic fsync and the two-stage stop (``Batch.stop``, which
Ctrl-C and SIGTERM call, and ``stop_after``); it prints nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import httpx

from batchgen.engine.clock import Clock, LoopClock
from batchgen.engine.collector import Collector
from batchgen.engine.downloads import DownloadTurns
from batchgen.engine.events import PossiblyCreated, Reporter, Silent, Stopping, Leaving
from batchgen.engine.polling import PollPlanner
from batchgen.engine.scheduler import Outstanding, Scheduler
from batchgen.engine.stats import RunStats
from batchgen.engine.summary import Pacing, RunMode, RunOutcome, RunSummary
from batchgen.errors import BatchgenError, BatchStopped, OutputError
from batchgen.job import Job, JobState
from batchgen.manifest import Manifest, load_manifest, plan_manifest
from batchgen.provider.client import ClientOptions, ProviderClient
from batchgen.provider.limits import Limits
from batchgen.provider.targets import ApiKey, ApiTarget, resolve_target
from batchgen.storage.folder import BatchFolder
from batchgen.storage.ledger import Ledger
from batchgen.storage.results import join, vanished
from batchgen.storage.writer import Writer

__all__ = ["Batch", "RunMode", "RunOptions", "RunOutcome", "RunSummary", "run_batch"]


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
    handle_signals: bool = False   # two-stage Ctrl-C / SIGTERM (the CLI turns it on)
    stop_after: float | None = None  # after the first stop, leave at once this many seconds later
    fsync_images: bool = False
    include_rejected: bool = False  # retry: also requests the provider rejected
    client: ClientOptions | None = None
    poll: PollPlanner | None = None
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # holds the API key
    api_transport: httpx.AsyncBaseTransport | None = None
    image_transport: httpx.AsyncBaseTransport | None = None
    api_key: ApiKey | None = field(default=None, repr=False)
    clock: Clock | None = None
    writer: Writer | None = None
    reporter: Reporter | None = None


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
        clock = o.clock or LoopClock()
        started = clock.now()
        plan = plan_manifest(m)  # the whole manifest is valid before anything is sent
        target, key = self._target()
        concurrency = o.concurrency or m.concurrency
        reporter = o.reporter or Silent()
        ledger = Ledger.open(self.folder, m.name, wall=clock.wall)
        try:
            writer = o.writer or BatchFolder(self.folder, fsync=o.fsync_images)
            writer.prepare()
            if ledger.needs_compaction():
                ledger.compact()
            if mode is not RunMode.RUN:
                self._requeue_failed(ledger, resubmit=mode is RunMode.RETRY)
            counts = ledger.counts()
            possibly_created = counts[JobState.SUBMITTING]
            stats = RunStats(planned=plan.jobs, already_done=counts[JobState.DONE], started=started)
            created_before = ledger.stats.tasks_created
            maybe_before = ledger.stats.maybe_duplicated
            limits = Limits(concurrency, o.rate_limit or m.rate_limit, now=clock.now,
                            parallel=(o.client or ClientOptions()).parallel_submits)
            stats.pace = limits
            downloads = DownloadTurns(max(4, min(64, concurrency)))
            async with self._provider(target, key, clock, limits, downloads.slots) as provider:
                collector = Collector(provider, ledger, writer, o.poll or PollPlanner(), stats, clock,
                                      model=m.model, batch=m.name, task_timeout=m.task_timeout,
                                      downloads=downloads)
                scheduler = Scheduler(provider, ledger, collector, stats, limits=limits, model=m.model,
                                      concurrency=concurrency, max_submits=o.max_jobs,
                                      submit_grace=provider.options.timeout,
                                      renew=mode is RunMode.RETRY)
                stream = _Stream(m, ledger, writer, stats, submit=mode is not RunMode.COLLECT)
                if possibly_created and mode is not RunMode.COLLECT:
                    reporter.notice(PossiblyCreated(possibly_created))
                running = self._running = _Running(scheduler, reporter, anyio.Event())
                try:
                    async with anyio.create_task_group() as group:
                        group.start_soon(reporter.watch, stats)
                        if o.handle_signals and threading.current_thread() is threading.main_thread():
                            group.start_soon(_two_stage_interrupt, self)
                        if o.stop_after is not None:
                            group.start_soon(self._leave_after, running, o.stop_after, clock)
                        group.start_soon(_sync_ledger_every, ledger, limits, clock, 1.0)
                        try:
                            await scheduler.run(self._outstanding(ledger), stream)
                        finally:
                            group.cancel_scope.cancel()
                finally:
                    self._running = None
            with anyio.CancelScope(shield=True):
                if ledger.needs_compaction():
                    ledger.compact()
            summary = self._summary(ledger, plan.jobs, stats, scheduler, stream, clock.now() - started)
            summary.possibly_created = possibly_created
            summary.mode = mode
            summary.tasks_created = ledger.stats.tasks_created - created_before
            summary.maybe_duplicated = ledger.stats.maybe_duplicated - maybe_before
            report = limits.report()
            summary.pacing = Pacing(report.ceiling, report.limit_min, report.limit_median,
                                    report.limit_max, report.refusals, report.window,
                                    report.window_learned, report.retries)
        finally:
            ledger.close()
        if scheduler.fatal is not None and not isinstance(scheduler.fatal, BatchStopped):
            raise scheduler.fatal
        return summary

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

    def _requeue_failed(self, ledger: Ledger, resubmit: bool) -> None:
        """Follow timed-out tasks again; with ``resubmit`` (retry), put other failures back too."""
        for job_id, rec in list(ledger.failures()):
            failure = rec.failure
            if rec.task_id and failure is not None and failure.follow:
                ledger.follow_again(job_id, rec.task_id)
            elif resubmit and (rec.get("retryable", True) or self.options.include_rejected):
                ledger.reset(job_id)

    def _summary(self, ledger: Ledger, planned: int, stats: RunStats, scheduler: Scheduler,
                 stream: _Stream, elapsed: float) -> RunSummary:
        s = RunSummary(batch=self.manifest.name, folder=self.folder, planned=planned,
                       submitted=stats.submitted, collected=stats.done,
                       already_done=stats.already_done, redownloaded=stream.redownloaded,
                       interrupted=scheduler.interrupted, elapsed=elapsed)
        if stream.complete:
            for job_id, _ in vanished(ledger):
                s.vanished += 1
                if len(s.vanished_sample) < 3:
                    s.vanished_sample.append(job_id)
        counted = 0
        for rec in ledger.records.values():
            if stream.complete and not rec.seen:
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
        s.output_failed = isinstance(scheduler.fatal, OutputError)
        return s


@dataclass
class _Running:
    """The run in progress, for ``Batch.stop``."""

    scheduler: Scheduler
    reporter: Reporter
    stopping: anyio.Event
    leaving: bool = False


class _Stream:
    """The manifest's jobs that still need work, decided against the ledger as they stream by.

    Yields a Job to submit, or an Outstanding to follow (a task whose image went missing on
    disk, or one whose ledger entry lost its spec). Reads through the storage package's one
    join of manifest and ledger, so records it never meets belong to jobs no longer in the
    manifest.
    """

    def __init__(self, manifest: Manifest, ledger: Ledger, writer: Writer, stats: RunStats,
                 submit: bool) -> None:
        self.manifest = manifest
        self.ledger = ledger
        self.writer = writer
        self.stats = stats
        self.submit = submit
        self.complete = False
        self.redownloaded = 0

    def __iter__(self) -> Iterator[Job | Outstanding]:
        ledger = self.ledger
        for result in join(self.manifest.jobs(), ledger):
            job, rec = result.job, result.record
            if rec is None:
                if self.submit:
                    yield job
                continue
            state = rec.state
            if state == JobState.DONE:
                if rec.file and self.writer.has_result(rec.file, rec.size):
                    continue
                self.stats.already_done -= 1
                self.redownloaded += 1
                if rec.task_id:
                    ledger.follow_again(job.job_id, rec.task_id)
                    yield Outstanding(job, rec.task_id, None, finished=True)
                elif self.submit:
                    ledger.reset(job.job_id)
                    yield job
            elif state in (JobState.PENDING, JobState.SUBMITTING):
                if self.submit:
                    yield job
            elif state.outstanding and rec.get("spec") is None and rec.task_id:
                yield Outstanding(job, rec.task_id, rec.get("submitted_at"))
        self.complete = True


async def _sync_ledger_every(ledger: Ledger, limits: Limits, clock: Clock, seconds: float) -> None:
    """fsync the ledger in a worker thread now and then; appends never wait for it. The run's
    limits go in the lock file beside it, for ``status`` to show.

    At the end of the run an fsync in progress is left to finish on its own (``Ledger.close``
    fsyncs once more): nothing waits on the thread, so a virtual clock, which jumps to the next
    deadline while a thread works, never jumps past a caller's own deadline."""
    while True:
        await clock.sleep(seconds)
        ledger.note_run(limits.snapshot().to_json())
        try:
            await anyio.to_thread.run_sync(ledger.sync, abandon_on_cancel=True)
        except OutputError:
            return  # the next append raises it where it can stop the batch


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
