"""Follow a submitted task to its end, then turn its result into files and a ``done`` record.

A job's own failure (the task failed, the URL expired for good, the bytes are not an image)
is recorded in the ledger as data and never raised; only what stops the whole batch (the key
refused, the disk full) propagates. Nothing is recorded done before its files are in place
and on disk (the Committer's group fsync). An image of another size than the one asked for is
kept, and said so in its sidecar, the ledger and the summary. Image URLs expire: a URL is
fetched the moment it is handed out (download turns go to the URL that expires first), and one
that has expired, or would before it can be fetched, is renewed by asking for the task result
again, for as long as the provider keeps the task.
"""

from __future__ import annotations

import logging
import time

import anyio

from batchgen._version import __version__
from batchgen.engine.clock import Clock
from batchgen.engine.commit import Committer, Saved
from batchgen.engine.downloads import DownloadTurns
from batchgen.engine.polling import PollPlanner, TaskClock
from batchgen.engine.stats import RunStats
from batchgen.errors import (
    BadImage,
    BatchStopped,
    DownloadError,
    ImageExpired,
    ProviderError,
    RateLimited,
    TaskNotFound,
)
from batchgen.job import Failed, Failure, Job
from batchgen.provider.base import Provider
from batchgen.provider.imagecheck import CheckedImage, requested_pixels
from batchgen.provider.offload import off_loop
from batchgen.provider.wire import TaskResult
from batchgen.storage.derived import derived_digest
from batchgen.storage.ledger import Ledger
from batchgen.storage.sidecar import ImageInfo, ProviderInfo, Sidecar, Timings
from batchgen.storage.writer import Writer

__all__ = ["Collector", "Renew"]

log = logging.getLogger("batchgen.engine.collector")


class Renew(Exception):
    """The recorded task cannot give this job its image (the provider forgot it, or its image
    came back broken twice): a run that may submit sends the job anew instead of failing it."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.reason)
        self.failed = failed


class Collector:
    """Polls tasks and saves their images for one batch."""

    def __init__(self, provider: Provider, ledger: Ledger, writer: Writer, planner: PollPlanner,
                 stats: RunStats, clock: Clock, *, model: str, batch: str, task_timeout: float,
                 downloads: DownloadTurns | None = None, failed_rounds: int = 2,
                 committer: Committer | None = None) -> None:
        self.provider = provider
        self.ledger = ledger
        self.writer = writer
        self.planner = planner
        self.stats = stats
        self.clock = clock
        self.model = model
        self.batch = batch
        self.task_timeout = task_timeout
        # Without a run's group commit (a collector built by hand), each save commits at once.
        self.committer = committer or Committer(ledger, writer, stats, clock, interval=0)
        self.downloads = downloads or DownloadTurns(8)
        # Rounds of failed downloads (each a few tries of one URL, a fresh URL between them)
        # before the job fails; expired URLs are renewed without such a count.
        self.failed_rounds = failed_rounds
        self._download_seconds = 0.0   # how long a download takes lately (URLs must outlive it)

    def clock_for(self, submitted_wall: float | None) -> TaskClock:
        """A TaskClock for a task submitted at a wall time (a resumed task) or just now."""
        now = self.clock.now()
        if submitted_wall is None:
            return TaskClock(submitted_at=now)
        return TaskClock(submitted_at=min(now, now - (self.clock.wall() - submitted_wall)))

    async def follow(self, job: Job, task_id: str, clock: TaskClock,
                     poll_now: bool = False, renew: bool = False) -> TaskResult | None:
        """Poll until the task finishes; the result if it succeeded, None if the job failed.

        ``renew``: a provider that no longer knows the task raises Renew instead of failing
        the job (``retry`` then submits it anew).
        """
        time_now, sleep = self.clock.now, self.clock.sleep
        deadline = clock.submitted_at + self.task_timeout
        now = time_now()
        delay = 0.0 if poll_now else self.planner.first_delay(already_waited=now - clock.submitted_at)
        last_status = "not polled yet"
        asked = 0.0   # the wait the provider named when it last refused a poll
        while True:
            now = time_now()
            if now + delay > deadline:
                delay = max(0.0, deadline - now)
            await sleep(delay)
            try:
                result = await self.provider.task_result(task_id)
            except TaskNotFound as exc:
                failed = Failed(Failure.TASK_NOT_FOUND, str(exc))
                if renew:
                    raise Renew(failed) from None
                self.record_failure(job, failed, task_id=task_id)
                return None
            except BatchStopped:
                raise
            except ProviderError as exc:
                result = None
                last_status = f"poll failing ({exc})"
                asked = (exc.retry_after or 0.0) if isinstance(exc, RateLimited) else 0.0
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
                    clock.result_at = now
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
                # Never asked again sooner than the provider said (a Retry-After past our backoff).
                delay = max(min(clock.last_delay, 60.0), asked)

    async def save(self, job: Job, task_id: str, result: TaskResult, clock: TaskClock,
                   renew: bool = False) -> bool:
        """Fetch, check and write the image and sidecar, then record the job done.

        ``renew``: when the task cannot give its image (forgotten, or broken twice), raise
        Renew instead of failing the job.
        """
        finished_wall = self.clock.wall()
        self.ledger.generated(job.job_id, result.extra.seed)
        self.stats.generated += 1
        fmt = str(job.request.get("output_format") or "webp")
        pixels = requested_pixels(job.request.get("size"))
        checked, problem, result = await self._fetch(task_id, result, clock, fmt, renew, pixels)
        if checked is None:
            assert problem is not None
            self.record_failure(job, problem, task_id=task_id)
            return False
        self.stats.downloads += 1
        sidecar = self._sidecar(job, task_id, result, checked, clock, finished_wall)
        if result.extra.seed_unusable is not None:
            sidecar.warnings.append(f"the provider reported the seed {result.extra.seed_unusable!r}, "
                                    f"which no request can carry; it is recorded as unknown")
            log.info("task %s: unusable seed %r recorded as unknown", task_id,
                        result.extra.seed_unusable)
        size_got = None
        if sidecar.image.size_differs:
            size_got = sidecar.image.size
            sidecar.warnings.append(f"the provider returned an image of {size_got}, not the "
                                    f"{sidecar.image.requested} the request asked for")
        if self.writer.remote:  # an object store: a PUT per file
            saved = await anyio.to_thread.run_sync(self.writer.save, job, checked.data, sidecar)
        else:
            saved = await off_loop(len(checked.data), self.writer.save, job, checked.data, sidecar)
        if size_got is not None:
            self.stats.wrong_size(f"{saved.file}: asked {sidecar.image.requested}, got {size_got}")
        await self.committer.add(Saved(job.job_id, saved, size_got, derived_digest(job)))
        return True

    async def _fetch(self, task_id: str, result: TaskResult, clock: TaskClock, fmt: str,
                     renew: bool, pixels: int | None = None
                     ) -> tuple[CheckedImage | None, Failed | None, TaskResult]:
        """The checked image, or why there is none; with the result it finally came from.

        A URL is fetched as soon as a download turn is free (the earliest expiry first). One
        that has expired, or would before it can be fetched, is renewed by asking for the task
        result again; that goes on with growing pauses until the provider forgets the task or
        ``task_timeout`` has passed since it finished, not a fixed number of times. Failed
        downloads are tried again with the same URL while it is young, with a fresh one once
        it is old, ``failed_rounds`` rounds in all. With ``renew``, a task that cannot give
        its image (forgotten, no image, broken bytes every round) raises Renew.
        """
        now = self.clock.now
        received = clock.result_at if clock.result_at is not None else now()
        give_up = now() + self.task_timeout
        renewals = rounds = 0
        problem: Failed | None = None
        fresh_needed = False
        while True:
            if fresh_needed:
                if renewals > 1:   # the provider keeps handing out dead URLs: do not hammer it
                    pause = min(30.0, 0.25 * 2 ** (renewals - 2))
                    if now() + pause >= give_up:
                        break
                    await self.clock.sleep(pause)
                try:
                    result = await self.provider.task_result(task_id)
                except TaskNotFound:
                    gone = Failed(Failure.EXPIRED, "the image URL expired and the provider no longer "
                                                   "has the task")
                    if renew:
                        raise Renew(gone) from None
                    return None, gone, result
                except BatchStopped:
                    raise
                except ProviderError as exc:
                    rounds += 1
                    problem = Failed(Failure.DOWNLOAD_FAILED, f"could not renew the image URL ({exc})")
                    if rounds >= self.failed_rounds or now() >= give_up:
                        break
                    continue
                except Exception as exc:  # an answer the client could not parse
                    log.info("unreadable task result for %s", task_id, exc_info=True)
                    rounds += 1
                    problem = Failed(Failure.DOWNLOAD_FAILED, f"unreadable task result ({_brief(exc)})")
                    if rounds >= self.failed_rounds or now() >= give_up:
                        break
                    continue
                received = now()
                self.stats.refreshed_urls += 1
                fresh_needed = False
            if not result.images:
                empty = Failed(Failure.NO_IMAGE, "the task succeeded but returned no image")
                if renew:
                    raise Renew(empty)
                return None, empty, result
            image = result.images[0]
            ttl = image.image_url_ttl
            expires = received + ttl if ttl is not None and ttl > 0 else float("inf")
            is_url = image.image_url.lower().startswith(("http://", "https://"))
            try:
                if not is_url:
                    return await self.provider.fetch_image(image, fmt, pixels=pixels), None, result
                async with self.downloads.turn(expires):
                    good_until = expires - self._min_life()
                    if now() >= good_until:   # would expire before it is fetched: renew first
                        renewals += 1
                        fresh_needed = True
                        problem = Failed(Failure.EXPIRED, "the image URL kept expiring before it "
                                                          "could be fetched")
                        continue
                    started = now()
                    checked = await self.provider.fetch_image(image, fmt, good_until=good_until,
                                                              pixels=pixels)
                    self._learn_download(now() - started)
                    return checked, None, result
            except ImageExpired as exc:
                renewals += 1
                fresh_needed = True
                problem = Failed(Failure.EXPIRED, f"{exc}; asking for the result again did not help")
            except BadImage as exc:
                problem = Failed(Failure.BAD_IMAGE, str(exc))
                if not exc.retryable:
                    break
                rounds += 1
                fresh_needed = True
            except DownloadError as exc:
                problem = Failed(Failure.DOWNLOAD_FAILED, str(exc))
                if not exc.retryable:   # its one deadline passed: no second round of it
                    break
                rounds += 1
                fresh_needed = True
            except Exception as exc:  # a URL or answer the client did not foresee: fail the job only
                log.info("cannot fetch the image of task %s", task_id, exc_info=True)
                problem = Failed(Failure.DOWNLOAD_FAILED, _brief(exc))
                rounds += 1
                fresh_needed = True
            if rounds >= self.failed_rounds or now() >= give_up:
                if renew and problem is not None and problem.failure is Failure.BAD_IMAGE:
                    raise Renew(problem)   # the task's image came back broken round after round
                break
        return None, problem, result

    def _min_life(self) -> float:
        """How long a URL must still live to be worth fetching: twice a recent download."""
        return max(0.5, 2.0 * self._download_seconds)

    def _learn_download(self, seconds: float) -> None:
        previous = self._download_seconds
        self._download_seconds = seconds if previous == 0.0 else 0.8 * previous + 0.2 * seconds

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
                            polls=clock.polls),
            nsfw=result.images[0].nsfw_detection_result if result.images else None)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
