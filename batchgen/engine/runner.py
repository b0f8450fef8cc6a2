"""One batch from manifest to files: run, collect and retry, resumable at any instant.

The runner validates the whole manifest before anything is sent, locks the batch folder,
replays the ledger, follows the tasks an earlier run left at the provider (oldest first), then
streams the manifest and submits what is not done yet. It owns the task group around the
scheduler, the periodic fsync, the progress display and the two-stage Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from batchgen.provider.client import ClientOptions, ProviderClient
from batchgen.engine.collector import Collector, RunStats
from batchgen.errors import BatchStopped, OutputError
from batchgen.job import Job
from batchgen.storage.ledger import OUTSTANDING, Ledger
from batchgen.manifest.loader import Manifest, load_manifest
from batchgen.provider.pacing import RateGate
from batchgen.manifest.plan import plan_manifest
from batchgen.engine.polling import PollPlanner
from batchgen.cli.progress import ProgressReporter, format_duration
from batchgen.provider.targets import ApiKey, ApiTarget, resolve_target
from batchgen.engine.scheduler import Outstanding, Scheduler
from batchgen.storage.folder import BatchFolder

__all__ = ["Batch", "RunOptions", "RunSummary", "run_batch"]

RETRY_BY_FOLLOWING = ("TIMEOUT",)  # failures whose task may still finish: follow it again


@dataclass
class RunOptions:
    """How to run a batch; ``None`` means "as the manifest says"."""

    output: Path | None = None
    concurrency: int | None = None
    rate_limit: float | None = None
    base_url: str | None = None
    max_jobs: int | None = None
    simulator: Any = None          # a batchgen.simulator.Simulator to use in-process
    progress: str = "auto"         # auto | live | lines | quiet
    handle_signals: bool = False   # two-stage Ctrl-C (the CLI turns it on)
    fsync_images: bool = False
    include_rejected: bool = False  # retry: also requests the provider rejected
    client: ClientOptions | None = None
    poll: PollPlanner | None = None
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # holds the API key


@dataclass
class RunSummary:
    """What a run did and what is left; ``exit_code`` follows the CLI's documented codes."""

    batch: str
    folder: Path
    planned: int
    done: int = 0
    failed: int = 0
    pending: int = 0
    outstanding: int = 0
    submitted: int = 0
    collected: int = 0
    already_done: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retryable_failed: int = 0
    tasks_created: int = 0
    maybe_duplicated: int = 0
    possibly_created: int = 0
    redownloaded: int = 0
    vanished: int = 0
    vanished_sample: list[str] = field(default_factory=list)
    stopped: str | None = None
    stop_kind: str | None = None
    interrupted: bool = False
    elapsed: float = 0.0
    exit_code: int = 0
    mode: str = "run"  # run | collect | retry

    def to_text(self, manifest_path: str | Path) -> str:
        lines: list[str] = []
        lines.append(f"{self.done}/{self.planned} images done in {self.folder / 'images'} "
                     f"({self.submitted} submitted, {self.collected} saved this run, "
                     f"{format_duration(self.elapsed)})")
        if self.possibly_created:
            lines.append(f"note: {self.possibly_created} job(s) were being submitted when an earlier run "
                         f"stopped; a task may exist at the provider without its id. They were "
                         f"submitted again.")
        if self.maybe_duplicated:
            lines.append(f"note: {self.maybe_duplicated} submit(s) broke off after the request was sent; "
                         f"the provider may have created (and billed) a task we hold no id for.")
        if self.redownloaded:
            lines.append(f"note: {self.redownloaded} image(s) recorded done were missing on disk and were "
                         f"fetched again.")
        if self.vanished:
            sample = ", ".join(self.vanished_sample)
            lines.append(f"note: {self.vanished} job(s) in the ledger are no longer in the manifest "
                         f"(e.g. {sample}); their files are kept.")
        if self.failed:
            reasons = ", ".join(f"{n} {r}" for r, n in self.failures.most_common())
            lines.append(f"{self.failed} job(s) failed ({reasons}). See `batchgen status {manifest_path}`; "
                         f"`batchgen retry {manifest_path}` runs the {self.retryable_failed} retryable "
                         f"one(s) again.")
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        if self.interrupted:
            lines.append(f"interrupted: {self.pending} job(s) not submitted, {self.outstanding} task(s) "
                         f"still at the provider. Run the same command again to finish.")
        elif self.pending and not self.stopped and self.mode == "collect":
            lines.append(f"{self.pending} job(s) not submitted yet: `batchgen run {manifest_path}` "
                         f"submits them.")
        elif self.pending and not self.stopped:
            lines.append(f"{self.pending} job(s) left to do: run the same command again.")
        elif self.outstanding and not self.stopped:
            lines.append(f"{self.outstanding} task(s) still at the provider: "
                         f"`batchgen collect {manifest_path}` picks them up.")
        return "\n".join(lines)


class Batch:
    """A manifest bound to its batch folder. ``await Batch(m).run()`` from Python."""

    def __init__(self, manifest: Manifest | str | Path, options: RunOptions | None = None) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.options = options or RunOptions()
        self.folder = Path(self.options.output or self.manifest.output)

    # -- public ---------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Submit everything not done yet and collect it; resumes whatever an earlier run left."""
        return await self._execute("run")

    async def collect(self) -> RunSummary:
        """Only poll and download tasks already submitted (including timed-out ones)."""
        return await self._execute("collect")

    async def retry(self) -> RunSummary:
        """Put failed (and expired) jobs back, then run."""
        return await self._execute("retry")

    # -- the work -------------------------------------------------------------------------

    def _target(self) -> tuple[ApiTarget, ApiKey, Any, Any]:
        m, o = self.manifest, self.options
        if o.simulator is not None:
            sim = o.simulator
            target = resolve_target(m.provider, sim.api_base_url, m.api_key_env)
            return target, ApiKey("simulated-key"), sim.api_transport(), sim.image_transport()
        target = resolve_target(m.provider, o.base_url or m.base_url, m.api_key_env)
        return target, target.read_key(o.environ), None, None

    async def _execute(self, mode: str) -> RunSummary:
        started = time.monotonic()
        m, o = self.manifest, self.options
        plan = plan_manifest(m)  # the whole manifest is valid before anything is sent
        target, key, transport, image_transport = self._target()
        concurrency = o.concurrency or m.concurrency
        ledger = Ledger.open(self.folder, m.name)
        try:
            store = BatchFolder(self.folder, fsync=o.fsync_images)
            store.prepare()
            if ledger.needs_compaction():
                ledger.compact()
            if mode != "run":
                self._requeue_failed(ledger, resubmit=mode == "retry")
            counts = ledger.counts()
            possibly_created = counts["submitting"]
            stats = RunStats(planned=plan.jobs, already_done=counts["done"])
            created_before = ledger.stats.tasks_created
            reporter = ProgressReporter(stats, mode=o.progress)
            gate = RateGate(o.rate_limit or m.rate_limit)
            client_options = o.client or ClientOptions(max_connections=max(4, min(64, concurrency // 8)))
            async with ProviderClient(target, key, options=client_options, gate=gate, transport=transport,
                    image_transport=image_transport) as client:
                collector = Collector(client, ledger, store, o.poll or PollPlanner(), stats,
                                      model=m.model, batch=m.name, task_timeout=m.task_timeout)
                scheduler = Scheduler(client, ledger, collector, stats, model=m.model,
                                      concurrency=concurrency, max_submits=o.max_jobs)
                outstanding = self._outstanding(ledger)
                stream = _Stream(m, ledger, store, stats, submit=mode != "collect")
                if possibly_created and mode != "collect":
                    reporter.say(f"{possibly_created} job(s) were being submitted when an earlier run "
                                 f"stopped: a task may exist at the provider without its id; "
                                 f"submitting them again.")
                async with anyio.create_task_group() as group:
                    group.start_soon(_sync_ledger_every, ledger, 1.0)
                    group.start_soon(reporter.run)
                    if o.handle_signals and threading.current_thread() is threading.main_thread():
                        group.start_soon(_two_stage_interrupt, scheduler, reporter)
                    try:
                        await scheduler.run(outstanding, stream)
                    finally:
                        group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                if ledger.needs_compaction():
                    ledger.compact()
            summary = self._summary(ledger, plan.jobs, stats, scheduler, stream, started)
            summary.possibly_created = possibly_created
            summary.mode = mode
            summary.tasks_created = ledger.stats.tasks_created - created_before
        finally:
            ledger.close()
        if scheduler.fatal is not None and not isinstance(scheduler.fatal, BatchStopped):
            raise scheduler.fatal
        return summary

    def _outstanding(self, ledger: Ledger) -> list[Outstanding]:
        found = []
        for job_id, rec in ledger.outstanding():
            job = rec.job(job_id)
            if job is not None and rec.task_id:
                found.append(Outstanding(job, rec.task_id, rec.get("submitted_at")))
        return found

    def _requeue_failed(self, ledger: Ledger, resubmit: bool) -> None:
        """Follow timed-out tasks again; with ``resubmit`` (retry), put other failures back too."""
        for job_id, rec in list(ledger.failures()):
            reason = str(rec.get("reason", ""))
            if rec.task_id and reason.startswith(RETRY_BY_FOLLOWING):
                ledger.follow_again(job_id, rec.task_id)
            elif resubmit and (rec.get("retryable", True) or self.options.include_rejected):
                ledger.reset(job_id)

    def _summary(self, ledger: Ledger, planned: int, stats: RunStats, scheduler: Scheduler,
                 stream: _Stream, started: float) -> RunSummary:
        s = RunSummary(batch=self.manifest.name, folder=self.folder, planned=planned,
                       submitted=stats.submitted, collected=stats.done,
                       already_done=stats.already_done, maybe_duplicated=stats.maybe_duplicated,
                       redownloaded=stream.redownloaded, interrupted=scheduler.interrupted,
                       elapsed=time.monotonic() - started)
        counted = 0
        for job_id, rec in ledger.records.items():
            if stream.complete and not rec.seen:
                s.vanished += 1
                if len(s.vanished_sample) < 3:
                    s.vanished_sample.append(job_id)
                continue
            counted += rec.state != "pending"
            if rec.state == "done":
                s.done += 1
            elif rec.state == "failed":
                s.failed += 1
                reason = str(rec.get("reason", "unknown")).split(":", 1)[0]
                s.failures[reason] += 1
                s.retryable_failed += bool(rec.get("retryable", True))
            elif rec.state in OUTSTANDING:
                s.outstanding += 1
        s.pending = max(0, planned - counted)
        why = scheduler.stopped or scheduler.fatal
        if why is not None:
            s.stopped = str(why)
            s.stop_kind = getattr(why, "kind", None)
        if isinstance(scheduler.fatal, OutputError):
            s.exit_code = OutputError.exit_code
        elif isinstance(why, BatchStopped):
            s.exit_code = BatchStopped.exit_code
        elif s.interrupted:
            s.exit_code = 130
        elif s.failed:
            s.exit_code = 1
        return s


class _Stream:
    """The manifest's jobs that still need work, decided against the ledger as they stream by.

    Yields a Job to submit, or an Outstanding to follow (a task whose image went missing on
    disk, or one whose ledger entry lost its spec). Marks every ledger record it meets, so
    records left unmarked at the end belong to jobs no longer in the manifest.
    """

    def __init__(self, manifest: Manifest, ledger: Ledger, store: BatchFolder, stats: RunStats,
                 submit: bool) -> None:
        self.manifest = manifest
        self.ledger = ledger
        self.store = store
        self.stats = stats
        self.submit = submit
        self.complete = False
        self.redownloaded = 0

    def __iter__(self) -> Iterator[Job | Outstanding]:
        ledger = self.ledger
        for job in self.manifest.jobs():
            rec = ledger.get(job.job_id)
            if rec is None:
                if self.submit:
                    yield job
                continue
            rec.seen = True
            state = rec.state
            if state == "done":
                if rec.file and self.store.has_result(rec.file, rec.size):
                    continue
                self.stats.already_done -= 1
                self.redownloaded += 1
                if rec.task_id:
                    ledger.follow_again(job.job_id, rec.task_id)
                    yield Outstanding(job, rec.task_id, None, finished=True)
                elif self.submit:
                    ledger.reset(job.job_id)
                    yield job
            elif state in ("pending", "submitting"):
                if self.submit:
                    yield job
            elif state in OUTSTANDING and rec.get("spec") is None and rec.task_id:
                yield Outstanding(job, rec.task_id, rec.get("submitted_at"))
        self.complete = True


async def _sync_ledger_every(ledger: Ledger, seconds: float) -> None:
    """fsync the ledger in a worker thread now and then; appends never wait for it."""
    while True:
        await anyio.sleep(seconds)
        try:
            await anyio.to_thread.run_sync(ledger.sync)
        except OutputError:
            return  # the next append raises it where it can stop the batch


async def _two_stage_interrupt(scheduler: Scheduler, reporter: ProgressReporter) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if not scheduler.interrupted:
                scheduler.interrupted = True
                scheduler.stop_submitting()
                reporter.say(f"stopping: no new submits; finishing the {scheduler.stats.in_flight} "
                             f"task(s) in flight. Press Ctrl-C again to leave at once (the next run "
                             f"collects them).")
            else:
                reporter.say("leaving now; the ledger is intact, run the same command to resume.")
                scheduler.abort()
                return


def run_batch(manifest: str | Path | Manifest, mode: str = "run",
              options: RunOptions | None = None) -> RunSummary:
    """Blocking convenience for scripts: ``run_batch("m.yaml")``. In a notebook, await Batch."""
    batch = Batch(manifest, options)
    method = {"run": batch.run, "collect": batch.collect, "retry": batch.retry}[mode]
    return anyio.run(method)
