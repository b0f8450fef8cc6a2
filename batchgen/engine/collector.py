"""Follow a submitted task to its end, then turn its result into files and a ``done`` record.

A job's own failure (the task failed, the URL expired for good, the bytes are not an image)
is recorded in the ledger as data and never raised; only what stops the whole batch (the key
refused, the disk full) propagates. Nothing is recorded done before its files are in place
and on disk (the Committer's group fsync). An image of another size than the one asked for is
kept, and said so in its sidecar, the ledger and the summary.
"""

from __future__ import annotations

import logging
import time

from batchgen._version import __version__
from batchgen.engine.clock import Clock
from batchgen.engine.commit import Committer, Saved
from batchgen.engine.polling import PollPlanner, TaskClock
from batchgen.engine.stats import RunStats
from batchgen.errors import (
    BadImage,
    BatchStopped,
    DownloadError,
    ImageExpired,
    ProviderError,
    TaskNotFound,
)
from batchgen.job import Failed, Failure, Job
from batchgen.provider.base import Provider
from batchgen.provider.imagecheck import CheckedImage
from batchgen.provider.offload import off_loop
from batchgen.provider.wire import TaskResult
from batchgen.storage.ledger import Ledger
from batchgen.storage.sidecar import ImageInfo, ProviderInfo, Sidecar, Timings
from batchgen.storage.writer import Writer

__all__ = ["Collector"]

log = logging.getLogger("batchgen.engine.collector")


class Collector:
    """Polls tasks and saves their images for one batch."""

    def __init__(self, provider: Provider, ledger: Ledger, writer: Writer, planner: PollPlanner,
                 stats: RunStats, clock: Clock, *, model: str, batch: str, task_timeout: float,
                 refresh_attempts: int = 2, committer: Committer | None = None) -> None:
        self.provider = provider
        self.ledger = ledger
        self.writer = writer
        self.planner = planner
        self.stats = stats
        self.clock = clock
        self.model = model
        self.batch = batch
        self.task_timeout = task_timeout
        self.refresh_attempts = refresh_attempts
        # Without a run's group commit (a collector built by hand), each save commits at once.
        self.committer = committer or Committer(ledger, writer, stats, clock, interval=0)

    def clock_for(self, submitted_wall: float | None) -> TaskClock:
        """A TaskClock for a task submitted at a wall time (a resumed task) or just now."""
        now = self.clock.now()
        if submitted_wall is None:
            return TaskClock(submitted_at=now)
        return TaskClock(submitted_at=min(now, now - (self.clock.wall() - submitted_wall)))

    async def follow(self, job: Job, task_id: str, clock: TaskClock,
                     poll_now: bool = False) -> TaskResult | None:
        """Poll until the task finishes; the result if it succeeded, None if the job failed."""
        time_now, sleep = self.clock.now, self.clock.sleep
        deadline = clock.submitted_at + self.task_timeout
        now = time_now()
        delay = 0.0 if poll_now else self.planner.first_delay(already_waited=now - clock.submitted_at)
        last_status = "not polled yet"
        while True:
            now = time_now()
            if now + delay > deadline:
                delay = max(0.0, deadline - now)
            await sleep(delay)
            try:
                result = await self.provider.task_result(task_id)
            except TaskNotFound as exc:
                self.record_failure(job, Failed(Failure.TASK_NOT_FOUND, str(exc)), task_id=task_id)
                return None
            except BatchStopped:
                raise
            except ProviderError as exc:
                result = None
                last_status = f"poll failing ({exc})"
            except Exception as exc:  # an answer the client could not parse: this job's problem
                log.info("unreadable task result for %s", task_id, exc_info=True)
                result = None
                last_status = f"poll failing (unreadable answer: {_brief(exc)})"
            clock.polls += 1
            self.stats.polls += 1
            now = time_now()
            if result is not None:
                last_status = result.status or "no status"
                if result.succeeded:
                    took = result.provider_duration()
                    self.planner.learn(took if took is not None else now - clock.submitted_at)
                    return result
                if result.failed:
                    reason = result.task.reason or "no reason given"
                    self.record_failure(job, Failed(Failure.TASK_FAILED, reason), task_id=task_id)
                    return None
            if now >= deadline:
                self.record_failure(job, Failed(
                    Failure.TIMEOUT, f"the task was still '{last_status}' after {self.task_timeout:g}s; "
                    f"its task id is kept, and `batchgen collect` picks it up if it finishes later"),
                    task_id=task_id)
                return None
            if result is not None:
                delay = self.planner.next_delay(clock, result, now)
            else:
                clock.last_delay = max(1.0, clock.last_delay * 2)
                delay = min(clock.last_delay, 60.0)

    async def save(self, job: Job, task_id: str, result: TaskResult, clock: TaskClock) -> bool:
        """Fetch, check and write the image and sidecar, then record the job done."""
        finished_wall = self.clock.wall()
        self.ledger.generated(job.job_id, result.extra.seed)
        self.stats.generated += 1
        fmt = str(job.request.get("output_format") or "webp")
        checked: CheckedImage | None = None
        problem = Failed(Failure.NO_IMAGE, "the task succeeded but returned no image")
        for attempt in range(self.refresh_attempts + 1):
            if attempt:
                try:
                    result = await self.provider.task_result(task_id)
                except TaskNotFound:
                    problem = Failed(Failure.EXPIRED, "the image URL expired and the provider no "
                                                      "longer has the task")
                    break
                except BatchStopped:
                    raise
                except ProviderError as exc:
                    problem = Failed(Failure.DOWNLOAD_FAILED, f"could not refresh the result ({exc})")
                    continue
                except Exception as exc:  # an answer the client could not parse
                    log.info("unreadable task result for %s", task_id, exc_info=True)
                    problem = Failed(Failure.DOWNLOAD_FAILED, f"unreadable task result ({_brief(exc)})")
                    continue
                self.stats.refreshed_urls += 1
            if not result.images:
                problem = Failed(Failure.NO_IMAGE, "the task succeeded but returned no image")
                continue
            try:
                checked = await self.provider.fetch_image(result.images[0], fmt)
                break
            except ImageExpired as exc:
                problem = Failed(Failure.EXPIRED, f"{exc}; asking for the result again did not help")
            except BadImage as exc:
                problem = Failed(Failure.BAD_IMAGE, str(exc))
                if not exc.retryable:
                    break
            except DownloadError as exc:
                problem = Failed(Failure.DOWNLOAD_FAILED, str(exc))
            except Exception as exc:  # a URL or answer the client did not foresee: fail the job only
                log.info("cannot fetch the image of task %s", task_id, exc_info=True)
                problem = Failed(Failure.DOWNLOAD_FAILED, _brief(exc))
        if checked is None:
            self.record_failure(job, problem, task_id=task_id)
            return False
        self.stats.downloads += 1
        sidecar = self._sidecar(job, task_id, result, checked, clock, finished_wall)
        size_got = None
        if sidecar.image.size_differs:
            size_got = sidecar.image.size
            sidecar.warnings.append(f"the provider returned an image of {size_got}, not the "
                                    f"{sidecar.image.requested} the request asked for")
        saved = await off_loop(len(checked.data), self.writer.save, job, checked.data, sidecar)
        if size_got is not None:
            self.stats.wrong_size(f"{saved.file}: asked {sidecar.image.requested}, got {size_got}")
        await self.committer.add(Saved(job.job_id, saved, size_got))
        return True

    def record_failure(self, job: Job, failed: Failed, *, task_id: str | None,
                       maybe_duplicated: int = 0) -> None:
        """The job's failure as data: in the ledger and the counters, never raised."""
        log.info("job %s failed: %s", job.job_id, failed.reason)
        self.ledger.failed(job.job_id, failed, task_id=task_id, maybe_duplicated=maybe_duplicated)
        self.stats.fail(failed.label, refused=failed.failure is Failure.REJECTED)

    def _sidecar(self, job: Job, task_id: str, result: TaskResult, checked: CheckedImage,
                 clock: TaskClock, finished_wall: float) -> Sidecar:
        # Every time on the run's clock: the provider's own timestamps are on another clock
        # (a "started" before "submitted" helps nobody).
        to_wall = self.clock.wall() - self.clock.now()
        started = clock.started_at + to_wall if clock.started_at is not None else None
        target = self.provider.target
        return Sidecar(
            batchgen_version=__version__, batch=self.batch, job_id=job.job_id, index=job.index,
            replica=job.replica, provider=ProviderInfo(target.provider, target.host, self.model),
            task_id=task_id, request=job.request, axes=job.axes, seed=result.extra.seed,
            caption=job.caption,
            image=ImageInfo(checked.format, checked.width, checked.height,
                            requested=str(job.request.get("size") or "")),
            timings=Timings(submitted=_iso(clock.submitted_at + to_wall), started=_iso(started),
                            finished=_iso(finished_wall), downloaded=_iso(self.clock.wall()),
                            polls=clock.polls))


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
