"""The scheduler on its own: slots kept full, limits held, stops obeyed, in virtual time."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batchgen.errors import StopKind
from batchgen.simulator import SimConfig
from enginekit import jobs, rig
from vclock import VIRTUAL_TIME

pytestmark = pytest.mark.anyio


@VIRTUAL_TIME
async def test_slots_stay_full_so_the_batch_takes_about_its_ideal_time(tmp_path: Path) -> None:
    # 64 tasks of 30 s, 8 in flight: ideal 240 s of provider time.
    async with rig(tmp_path, SimConfig(task_seconds=30, task_jitter=6), concurrency=8) as r:
        start = anyio.current_time()
        await r.scheduler.run([], jobs(64))
        took = anyio.current_time() - start
    assert r.stats.done == 64 and r.stats.failed == 0
    assert r.sim.stats.max_in_flight_seen == 8  # never more than the limit, and the limit is used
    assert 240 <= took <= 1.15 * 240, took
    # Polls are bounded per task (no poll-every-second loop): 30 s tasks take a handful.
    assert r.sim.stats.polls_per_task() <= 5.0, r.sim.stats.polls_per_task()


@VIRTUAL_TIME
async def test_max_submits_caps_new_tasks_and_leaves_the_rest(tmp_path: Path) -> None:
    async with rig(tmp_path, SimConfig(task_seconds=5), max_submits=3) as r:
        await r.scheduler.run([], jobs(10))
    assert r.sim.stats.tasks_created == 3 and r.stats.done == 3
    assert len(r.ledger.records) == 3  # the 7 others were never touched


@VIRTUAL_TIME
async def test_balance_running_out_stops_submitting_and_still_collects_what_was_paid(tmp_path: Path) -> None:
    async with rig(tmp_path, SimConfig(task_seconds=20, balance=5), concurrency=4) as r:
        await r.scheduler.run([], jobs(12))
    assert r.scheduler.stopped is not None and r.scheduler.stopped.kind is StopKind.BALANCE
    assert r.sim.stats.tasks_created == 5 and r.stats.done == 5  # every paid task collected
    states = {rec.state for rec in r.ledger.records.values()}
    assert states <= {"done", "pending"}


@VIRTUAL_TIME
async def test_a_provider_that_takes_one_task_at_a_time_brings_the_limit_down_to_one(tmp_path: Path) -> None:
    # One slot at the provider, eight wanted: a few refusals bring the limit to 1, and the
    # rest wait for the task in flight to end instead of being refused again and again.
    config = SimConfig(task_seconds=60, task_jitter=0, max_in_flight=1, retry_after="seconds")
    async with rig(tmp_path, config, concurrency=8) as r:
        start = anyio.current_time()
        await r.scheduler.run([], jobs(6))
        took = anyio.current_time() - start
    assert r.stats.done == 6 and r.sim.stats.tasks_created == 6
    assert 6 * 60 <= took < 6 * 60 + 5  # one task at a time, as the provider allows, no idle slot
    assert r.limits.tasks.slots == 1
    assert r.sim.stats.submits_by_outcome["RATE_LIMIT_EXCEEDED"] <= 3


@VIRTUAL_TIME
async def test_a_rate_limit_spaces_submits_to_the_minute(tmp_path: Path) -> None:
    async with rig(tmp_path, SimConfig(task_seconds=1, task_jitter=0), concurrency=32, rpm=30) as r:
        start = anyio.current_time()
        await r.scheduler.run([], jobs(31))
        took = anyio.current_time() - start
    assert r.stats.done == 31
    assert 60 <= took < 70  # 31 submits at 30 a minute: the last one 60 s after the first
