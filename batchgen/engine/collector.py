"""Follow a submitted task to its end, then turn its result into files and a ``done`` record.

A job's own failure (the task failed, the URL expired for good, the bytes are not an image)
is recorded in the ledger as data and never raised; only what stops the whole batch (the key
refused, the disk full) propagates. Nothing is recorded done before its files are in place.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from collections import Counter
from typing import Any

import anyio

from batchgen._version import __version__
from batchgen.provider.client import ProviderClient
from batchgen.errors import (
    BadImage,
    BatchStopped,
    DownloadError,
    ImageExpired,
    ProviderError,
    TaskNotFound,
)
from batchgen.provider.imagecheck import CheckedImage
from batchgen.job import Job
from batchgen.storage.ledger import Ledger
from batchgen.provider.offload import off_loop
from batchgen.engine.polling import PollPlanner, TaskClock
from batchgen.storage.folder import BatchFolder
from batchgen.provider.wire import TaskResult

__all__ = ["Collector", "RunStats"]

log = logging.getLogger("batchgen.engine.collector")


@dataclass
class RunStats:
    """Live counters of one run, read by the progress display and the summary."""

    planned: int = 0
    already_done: int = 0
    submitted: int = 0
    in_flight: int = 0
    generated: int = 0
    done: int = 0
    failed: int = 0
    polls: int = 0
    downloads: int = 0
    bytes: int = 0
    maybe_duplicated: int = 0
    refreshed_urls: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failures[reason.split(":", 1)[0]] += 1


class Collector:
    """Polls tasks and saves their images for one batch."""

    def __init__(self, client: ProviderClient, ledger: Ledger, folder: BatchFolder,
                 planner: PollPlanner, stats: RunStats, *, model: str, batch: str,
                 task_timeout: float, refresh_attempts: int = 2) -> None:
        self.client = client
        self.ledger = ledger
        self.folder = folder
        self.planner = planner
        self.stats = stats
        self.model = model
        self.batch = batch
        self.task_timeout = task_timeout
        self.refresh_attempts = refresh_attempts
        # Loop clock -> wall clock, for timestamps people read in sidecars.
        self._wall_offset = time.time() - anyio.current_time()

    def wall(self, loop_time: float) -> float:
        return loop_time + self._wall_offset

    def clock_for(self, submitted_wall: float | None) -> TaskClock:
        """A TaskClock for a task submitted at a wall time (a resumed task) or just now."""
        now = anyio.current_time()
        if submitted_wall is None:
            return TaskClock(submitted_at=now)
        return TaskClock(submitted_at=min(now, submitted_wall - self._wall_offset))

    async def follow(self, job: Job, task_id: str, clock: TaskClock,
                     poll_now: bool = False) -> TaskResult | None:
        """Poll until the task finishes; the result if it succeeded, None if the job failed."""
        deadline = clock.submitted_at + self.task_timeout
        now = anyio.current_time()
        delay = 0.0 if poll_now else self.planner.first_delay(already_waited=now - clock.submitted_at)
        last_status = "not polled yet"
        while True:
            now = anyio.current_time()
            if now + delay > deadline:
                delay = max(0.0, deadline - now)
            await anyio.sleep(delay)
            try:
                result = await self.client.task_result(task_id)
            except TaskNotFound as exc:
                self.record_failure(job, f"TASK_NOT_FOUND: {exc}", retryable=True, task_id=task_id)
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
            now = anyio.current_time()
            if result is not None:
                last_status = result.status or "no status"
                if result.succeeded:
                    took = result.provider_duration()
                    self.planner.learn(took if took is not None else now - clock.submitted_at)
                    return result
                if result.failed:
                    reason = result.task.reason or "no reason given"
                    self.record_failure(job, f"TASK_FAILED: {reason}", retryable=True, task_id=task_id)
                    return None
            if now >= deadline:
                self.record_failure(job, f"TIMEOUT: the task was still '{last_status}' after "
                                  f"{self.task_timeout:g}s; its task id is kept, and `batchgen "
                                  f"collect` picks it up if it finishes later",
                             retryable=True, task_id=task_id)
                return None
            if result is not None:
                delay = self.planner.next_delay(clock, result, now)
            else:
                clock.last_delay = max(1.0, clock.last_delay * 2)
                delay = min(clock.last_delay, 60.0)

    async def save(self, job: Job, task_id: str, result: TaskResult, clock: TaskClock) -> bool:
        """Fetch, check and write the image and sidecar, then record the job done."""
        finished_wall = time.time()
        self.ledger.generated(job.job_id, result.extra.seed)
        self.stats.generated += 1
        fmt = str(job.request.get("output_format") or "webp")
        checked: CheckedImage | None = None
        problem = ""
        for attempt in range(self.refresh_attempts + 1):
            if attempt:
                try:
                    result = await self.client.task_result(task_id)
                except TaskNotFound:
                    problem = "EXPIRED: the image URL expired and the provider no longer has the task"
                    break
                except BatchStopped:
                    raise
                except ProviderError as exc:
                    problem = f"DOWNLOAD_FAILED: could not refresh the result ({exc})"
                    continue
                except Exception as exc:  # an answer the client could not parse
                    log.info("unreadable task result for %s", task_id, exc_info=True)
                    problem = f"DOWNLOAD_FAILED: unreadable task result ({_brief(exc)})"
                    continue
                self.stats.refreshed_urls += 1
            if not result.images:
                problem = "NO_IMAGE: the task succeeded but returned no image"
                continue
            try:
                checked = await self.client.fetch_image(result.images[0], fmt)
                break
            except ImageExpired as exc:
                problem = f"EXPIRED: {exc}; asking for the result again did not help"
            except BadImage as exc:
                problem = f"BAD_IMAGE: {exc}"
                if not exc.retryable:
                    break
            except DownloadError as exc:
                problem = f"DOWNLOAD_FAILED: {exc}"
            except Exception as exc:  # a URL or answer the client did not foresee: fail the job only
                log.info("cannot fetch the image of task %s", task_id, exc_info=True)
                problem = f"DOWNLOAD_FAILED: {_brief(exc)}"
        if checked is None:
            self.record_failure(job, problem, retryable=True, task_id=task_id)
            return False
        self.stats.downloads += 1
        sidecar = self._sidecar(job, task_id, result, checked, clock, finished_wall)
        saved = await off_loop(len(checked.data), self.folder.save, job, checked.data, sidecar)
        self.ledger.done(job.job_id, saved.file, saved.size, saved.sha256)
        self.stats.done += 1
        self.stats.bytes += saved.size
        return True

    def record_failure(self, job: Job, reason: str, *, retryable: bool, task_id: str | None,
                       maybe_duplicated: int = 0) -> None:
        log.info("job %s failed: %s", job.job_id, reason)
        self.ledger.failed(job.job_id, reason, retryable, task_id=task_id,
                           maybe_duplicated=maybe_duplicated)
        self.stats.fail(reason)

    def _sidecar(self, job: Job, task_id: str, result: TaskResult, checked: CheckedImage,
                 clock: TaskClock, finished_wall: float) -> dict[str, Any]:
        started_ms = result.debug_ms("execute_time_ms")
        started = started_ms / 1000 if started_ms else (
            self.wall(clock.started_at) if clock.started_at is not None else None)
        return {
            "batchgen_version": __version__,
            "batch": self.batch,
            "job_id": job.job_id,
            "index": job.index,
            "replica": job.replica,
            "provider": {"name": self.client.target.provider, "host": self.client.target.host,
                         "model": self.model},
            "task_id": task_id,
            "request": job.request,
            "axes": job.axes,
            "seed": result.extra.seed,
            "caption": job.caption,
            "image": {"format": checked.format, "width": checked.width, "height": checked.height},
            "timings": {
                "submitted": _iso(self.wall(clock.submitted_at)),
                "started": _iso(started),
                "finished": _iso(finished_wall),
                "downloaded": _iso(time.time()),
                "polls": clock.polls,
            },
        }


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
