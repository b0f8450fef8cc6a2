"""The collector on its own: follow, time out, refresh expired URLs, save, in virtual time."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batchgen.engine.downloads import DownloadTurns
from batchgen.job import Failure
from batchgen.simulator import SimConfig
from enginekit import jobs, rig
from vclock import VIRTUAL_TIME

pytestmark = pytest.mark.anyio


async def submit(r, job):
    r.ledger.submitting(job)
    sub = await r.client.submit("z-image-turbo-lora", job.request)
    r.ledger.submitted(job.job_id, sub.task_id)
    return sub.task_id


@VIRTUAL_TIME
async def test_a_finished_task_is_saved_with_its_sidecar_then_recorded_done(tmp_path: Path) -> None:
    async with rig(tmp_path, SimConfig(task_seconds=12, task_jitter=0)) as r:
        job = jobs(1)[0]
        task_id = await submit(r, job)
        clock = r.collector.clock_for(None)
        result = await r.collector.follow(job, task_id, clock)
        assert result is not None and anyio.current_time() - clock.submitted_at >= 12
        assert await r.collector.save(job, task_id, result, clock)
    rec = r.ledger.get(job.job_id)
    assert rec.state == "done" and rec.file == "images/img-0.png" and rec.sha256 is not None
    side = (tmp_path / "out" / "images" / "img-0.json").read_text()
    assert task_id in side and rec.sha256_hex in side
    assert clock.polls <= 3  # a cold start: a few polls, not one a second


@VIRTUAL_TIME
async def test_a_task_that_never_finishes_fails_timeout_at_task_timeout_keeping_its_id(tmp_path: Path) -> None:
    async with rig(tmp_path, SimConfig(task_seconds=5, fault_stuck=1.0), task_timeout=1800) as r:
        job = jobs(1)[0]
        task_id = await submit(r, job)
        clock = r.collector.clock_for(None)
        assert await r.collector.follow(job, task_id, clock) is None
        waited = anyio.current_time() - clock.submitted_at
    rec = r.ledger.get(job.job_id)
    assert rec.failure is Failure.TIMEOUT and rec.task_id == task_id and rec.failure.follow
    assert 1800 <= waited < 1801
    assert clock.polls < 400  # bounded: backoff up to the planner's ceiling, not a busy loop


@VIRTUAL_TIME
async def test_a_failed_task_is_recorded_as_data_with_its_typed_reason(tmp_path: Path) -> None:
    async with rig(tmp_path, SimConfig(task_seconds=5, fault_task_failed=1.0)) as r:
        job = jobs(1)[0]
        task_id = await submit(r, job)
        assert await r.collector.follow(job, task_id, r.collector.clock_for(None)) is None
    rec = r.ledger.get(job.job_id)
    assert rec.failure is Failure.TASK_FAILED and rec.get("retryable") is True
    assert r.stats.failures == {"TASK_FAILED": 1}


@VIRTUAL_TIME
async def test_an_expired_url_is_refreshed_from_the_task_and_the_image_saved(tmp_path: Path) -> None:
    # URLs live 1 s; the task result is asked for again when the download answers 403.
    async with rig(tmp_path, SimConfig(task_seconds=3, task_jitter=0, url_ttl=1.0)) as r:
        job = jobs(1)[0]
        task_id = await submit(r, job)
        clock = r.collector.clock_for(None)
        result = await r.collector.follow(job, task_id, clock)
        await anyio.sleep(5)  # the URL in hand has expired
        assert await r.collector.save(job, task_id, result, clock)
    assert r.ledger.get(job.job_id).state == "done" and r.stats.refreshed_urls == 1


@VIRTUAL_TIME
async def test_a_url_about_to_expire_is_renewed_before_it_is_fetched(tmp_path: Path) -> None:
    async with rig(tmp_path, SimConfig(task_seconds=1, task_jitter=0, url_ttl=3.0)) as r:
        job = jobs(1)[0]
        task_id = await submit(r, job)
        clock = r.collector.clock_for(None)
        result = await r.collector.follow(job, task_id, clock)
        await anyio.sleep(2.7)  # 0.3 s of life left: not worth starting a download with
        assert await r.collector.save(job, task_id, result, clock)
    assert r.stats.refreshed_urls == 1
    assert r.sim.stats.downloads_by_outcome == {"ok": 1}   # never sent to a dying URL


@VIRTUAL_TIME
async def test_a_url_is_renewed_for_as_long_as_the_task_is_there_not_a_fixed_twice(tmp_path: Path) -> None:
    # Every URL is dead on arrival for a while, then the object store recovers.
    async with rig(tmp_path, SimConfig(task_seconds=1, task_jitter=0, fault_expire=1.0),
                   task_timeout=600) as r:
        job = jobs(1)[0]
        task_id = await submit(r, job)
        clock = r.collector.clock_for(None)
        result = await r.collector.follow(job, task_id, clock)

        async def recover() -> None:
            await anyio.sleep(60)
            r.sim.config.fault_expire = 0.0

        async with anyio.create_task_group() as group:
            group.start_soon(recover)
            assert await r.collector.save(job, task_id, result, clock)
    assert r.ledger.get(job.job_id).state == "done"
    assert 4 <= r.stats.refreshed_urls <= 12      # renewed with growing pauses, not hammered


def downloader(turns: DownloadTurns, order: list[str]):
    """A download that waits ``delay``, then holds a turn for one second, noting its name."""

    async def download(name: str, expires: float, delay: float) -> None:
        await anyio.sleep(delay)
        async with turns.turn(expires):
            order.append(name)
            await anyio.sleep(1)

    return download


@VIRTUAL_TIME
async def test_download_turns_go_to_the_url_that_expires_first() -> None:
    turns = DownloadTurns(1)
    order: list[str] = []
    download = downloader(turns, order)

    async with anyio.create_task_group() as group:
        group.start_soon(download, "first", 100.0, 0.0)     # holds the only turn for a second
        group.start_soon(download, "late", 50.0, 0.1)
        group.start_soon(download, "soonest", 10.0, 0.2)    # asked last, expires first
        group.start_soon(download, "middle", 30.0, 0.3)
    assert order == ["first", "soonest", "middle", "late"]
    assert turns.busy == 0 and turns.waiting == 0


@VIRTUAL_TIME
async def test_a_cancelled_wait_for_a_download_turn_hands_nothing_out_of_order() -> None:
    turns = DownloadTurns(1)
    order: list[str] = []
    download = downloader(turns, order)

    async with anyio.create_task_group() as group:
        group.start_soon(download, "first", 100.0, 0.0)
        with anyio.move_on_after(0.5):
            await download("given up", 1.0, 0.1)
        group.start_soon(download, "next", 50.0, 0.0)
    assert order == ["first", "next"] and turns.busy == 0
