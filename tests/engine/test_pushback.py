"""When the provider pushes back, end to end through ``Batch``, in virtual time.

One test per row of the goals: a cap on tasks in flight below ``concurrency``, a rate window
with and without ``--rpm``, random 429s, a stop inside a pause, an outage after success. The
simulator shares the virtual clock, so wall / ideal is measured exactly and replays; what
needs real sockets (a dead port) or a real process (SIGTERM, kill -9) is in
``test_pushback_live.py``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import pytest
from trio.testing import MockClock

from batchgen.cli.exitcodes import exit_code
from batchgen.cli.render import render_progress, render_status, render_summary
from batchgen.engine.polling import PollPlanner
from batchgen.engine.runner import Batch, RunOptions, RunSummary
from batchgen.manifest.loader import load_manifest
from batchgen.provider.client import ClientOptions
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.ledger import Ledger
from batchgen.storage.status import batch_status
from faultkit import Rewriter, check_folder, manifest_text, simulated, write_manifest
from vclock import run_virtual

TASK = 0.5


def real_options(out: Path, sim, **extra) -> RunOptions:
    """The defaults a user gets (client, poll planner), against ``sim``; saves are committed on
    the spot, so no worker thread lets the virtual clock run on while it works (the figures are
    then the same on a busy machine as on an idle one)."""
    extra.setdefault("commit_every", 0)
    return RunOptions(output=out, client=ClientOptions(), poll=PollPlanner(), **simulated(sim), **extra)


def vsim(**config) -> Simulator:
    return Simulator(SimConfig(**{"task_seconds": TASK, "task_jitter": 0.1, "fault_seed": 3, **config}),
                     clock=anyio.current_time)


def run(batch: Batch, mode: str = "run", alongside: Callable[[Batch], Awaitable[None]] | None = None,
        clock: MockClock | None = None, limit: float = 7200.0) -> tuple[RunSummary, float]:
    """Run ``mode`` in virtual time, with ``alongside(batch)`` running beside it; the summary
    and the virtual seconds the run took."""
    out: dict = {}

    async def go() -> None:
        with anyio.fail_after(limit):
            async with anyio.create_task_group() as group:
                async def main() -> None:
                    started = anyio.current_time()
                    out["summary"] = await getattr(batch, mode)()
                    out["took"] = anyio.current_time() - started
                    group.cancel_scope.cancel()

                group.start_soon(main)
                if alongside is not None:
                    await alongside(batch)
                await anyio.sleep_forever()

    run_virtual(go, clock=clock)
    return out["summary"], out["took"]


class Wire:
    """Records every request and answer at the simulator's door: (time, method, status)."""

    def __init__(self, sim: Simulator, fail: Callable[[httpx.Request], bool] | None = None) -> None:
        self.sim = sim
        self.seen: list[tuple[float, str, str, int]] = []
        self.rewriter = Rewriter(sim, self._record)
        self.fail = fail

    def _record(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        self.seen.append((anyio.current_time(), request.method, request.url.path, response.status_code))
        return response

    def submits(self, status: int | None = None) -> list[float]:
        return [t for t, method, _, code in self.seen if method == "POST" and (status is None or code == status)]


def batch_for(tmp_path: Path, jobs: int, concurrency: int, options: RunOptions, extra: str = "") -> Batch:
    path = write_manifest(tmp_path, manifest_text("pushback", jobs, concurrency=concurrency, extra=extra))
    return Batch(load_manifest(path), options)


def refused_per_job(sim: Simulator, jobs: int) -> float:
    return sim.stats.submits_by_outcome["RATE_LIMIT_EXCEEDED"] / jobs


# -- a cap on tasks in flight -------------------------------------------------------------------

def test_a_cap_of_8_under_concurrency_32_is_found_within_seconds(tmp_path: Path) -> None:
    sim = vsim(max_in_flight=8, retry_after="none")
    batch = batch_for(tmp_path, 240, 32, real_options(tmp_path / "out", sim))
    summary, took = run(batch)
    ideal = sim.stats.task_seconds_total / 8
    assert summary.done == 240 and summary.failed == 0
    assert took / ideal <= 1.15, (took, ideal)
    assert refused_per_job(sim, 240) <= 0.25
    pacing = summary.pacing
    assert pacing.ceiling == 32 and pacing.limit_median == 8 and pacing.limit_min >= 7
    assert sim.stats.max_in_flight_seen == 8
    text = render_summary(summary, "m.yaml")
    assert "--concurrency 8" in text and "none of them failed a job" in text
    check_folder(tmp_path / "out")


def test_status_shows_the_limit_of_a_running_batch_and_nothing_once_it_ended(tmp_path: Path) -> None:
    sim = vsim(max_in_flight=8, retry_after="none", task_seconds=5.0)
    batch = batch_for(tmp_path, 80, 32, real_options(tmp_path / "out", sim))
    seen: dict = {}

    async def look(batch: Batch) -> None:
        await anyio.sleep(20)
        seen["report"] = batch_status(tmp_path / "out")

    summary, _ = run(batch, alongside=look)
    report = seen["report"]
    assert report.running and report.live is not None and report.live["pid"] == os.getpid()
    assert report.live["limit"] == 8 and report.live["ceiling"] == 32
    text = render_status(report)
    assert "running now" in text and "(limit 8 of 32, adapted to the provider)" in text
    assert batch_status(tmp_path / "out").live is None   # the run ended: no stale claim


# -- a rate window ----------------------------------------------------------------------------

def rate_ideal(jobs: int, rpm: int, task: float) -> float:
    """The earliest a batch can end under a sliding window of ``rpm`` submits per minute."""
    return (-(-jobs // rpm) - 1) * 60.0 + task


def test_60_submits_per_sliding_minute_without_retry_after_are_learned(tmp_path: Path) -> None:
    sim = vsim(rpm=60, retry_after="none")
    batch = batch_for(tmp_path, 90, 32, real_options(tmp_path / "out", sim))
    summary, took = run(batch)
    assert summary.done == 90 and summary.failed == 0
    assert took / rate_ideal(90, 60, TASK) <= 1.3, took
    assert summary.pacing.window == 60 and summary.pacing.window_learned
    assert refused_per_job(sim, 90) <= 0.25
    assert "--rpm 60" in render_summary(summary, "m.yaml")   # the hint to skip the learning


@pytest.mark.parametrize("retry_after", ["none", "seconds"])
def test_told_the_rate_a_client_side_window_bursts_to_it_and_never_over(tmp_path: Path,
                                                                         retry_after: str) -> None:
    sim = vsim(rpm=60, retry_after=retry_after)
    wire = Wire(sim)
    batch = batch_for(tmp_path, 90, 32, real_options(tmp_path / "out", wire.rewriter, rate_limit=60))
    summary, took = run(batch)
    assert summary.done == 90 and summary.failed == 0
    assert took / rate_ideal(90, 60, TASK) <= 1.1, took
    assert sim.stats.submits_by_outcome["RATE_LIMIT_EXCEEDED"] == 0
    accepted = wire.submits(200)
    assert len(accepted) == 90
    assert accepted[59] - accepted[0] < 5          # a burst up to the limit, not one a second
    for i, t in enumerate(accepted):
        assert sum(1 for u in accepted[i:] if u < t + 60) <= 60


def test_a_learned_window_with_retry_after_is_honoured_for_everyone(tmp_path: Path) -> None:
    sim = vsim(rpm=30, retry_after="seconds")
    batch = batch_for(tmp_path, 70, 16, real_options(tmp_path / "out", sim))
    summary, took = run(batch)
    assert summary.done == 70 and summary.failed == 0
    assert took / rate_ideal(70, 30, TASK) <= 1.3, took
    assert refused_per_job(sim, 70) <= 0.3


# -- sporadic overload ----------------------------------------------------------------------------

@pytest.mark.slow
def test_random_429s_slow_the_batch_little_and_stall_no_one(tmp_path: Path) -> None:
    def pace(folder: Path, **config) -> tuple[float, RunSummary, Simulator]:
        sim = vsim(**config)
        batch = batch_for(folder, 160, 32, real_options(folder / "out", sim))
        summary, took = run(batch)
        assert summary.done == 160 and summary.failed == 0
        return 160 / took, summary, sim

    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    clean, _, _ = pace(tmp_path / "clean")
    noisy, summary, sim = pace(tmp_path / "noisy", fault_429=0.10, retry_after="half")
    assert sim.stats.faults["fault_429"] >= 10
    assert noisy >= 0.7 * clean, (noisy, clean)
    assert summary.pacing.limit_median == 32          # sporadic refusals are not a limit
    assert summary.pacing.refusals.get("rate window", 0) == 0


# -- stopping on time -------------------------------------------------------------------------------

def test_a_stop_inside_a_pause_sends_nothing_more_and_is_out_within_10_seconds(tmp_path: Path) -> None:
    sim = vsim(max_in_flight=4, retry_after="seconds", task_seconds=3.0)
    wire = Wire(sim)
    batch = batch_for(tmp_path, 40, 32, real_options(tmp_path / "out", wire.rewriter))
    stopped_at: list[float] = []

    async def stop_in_a_pause(batch: Batch) -> None:
        while not sim.stats.submits_by_outcome["RATE_LIMIT_EXCEEDED"]:
            await anyio.sleep(0.01)
        await anyio.sleep(0.5)              # refused jobs wait (Retry-After, or for a slot)
        stopped_at.append(anyio.current_time())
        batch.stop()

    summary, _ = run(batch, alongside=stop_in_a_pause)
    out_in = wire.seen[-1][0] - stopped_at[0]
    assert summary.interrupted and exit_code(summary) == 130
    assert not [t for t in wire.submits() if t > stopped_at[0]]   # no submit after the stop
    assert out_in <= 10, out_in
    counts = Ledger.read(tmp_path / "out").counts()
    assert counts["done"] == sim.stats.tasks_created == 4          # what was paid for is saved
    assert counts["submitting"] == counts["submitted"] == counts["generated"] == counts["failed"] == 0
    again, _ = run(Batch(batch.manifest, real_options(tmp_path / "out", sim)))
    assert again.done == 40 and sim.stats.tasks_created == 40


def test_stop_after_leaves_at_once_with_the_ledger_intact(tmp_path: Path) -> None:
    sim = vsim(task_seconds=600.0, task_jitter=0.0)
    batch = batch_for(tmp_path, 12, 4, real_options(tmp_path / "out", sim, stop_after=5.0))
    marks: list[float] = []

    async def stop_soon(batch: Batch) -> None:
        while sim.stats.tasks_created < 4:
            await anyio.sleep(0.1)
        marks.append(anyio.current_time())
        batch.stop()

    summary, took = run(batch, alongside=stop_soon)
    assert summary.interrupted and summary.outstanding == 4
    assert took - marks[0] < 6.0        # five seconds of grace, not ten minutes of tasks
    ledger = Ledger.read(tmp_path / "out")
    assert ledger.counts()["submitted"] == 4 and ledger.counts()["submitting"] == 0
    clock = MockClock(autojump_threshold=0)
    again, _ = run(Batch(batch.manifest, real_options(tmp_path / "out", sim)), clock=clock)
    assert again.done == 12 and sim.stats.tasks_created == 12     # the 4 were collected, not redone


def test_a_second_stop_leaves_at_once(tmp_path: Path) -> None:
    sim = vsim(task_seconds=600.0, task_jitter=0.0)
    batch = batch_for(tmp_path, 8, 4, real_options(tmp_path / "out", sim))
    marks: list[float] = []

    async def stop_twice(batch: Batch) -> None:
        while sim.stats.tasks_created < 4:
            await anyio.sleep(0.1)
        batch.stop()
        await anyio.sleep(30)
        marks.append(anyio.current_time())
        batch.stop()

    summary, took = run(batch, alongside=stop_twice)
    assert summary.interrupted and took < marks[0] + 0.5
    assert Ledger.read(tmp_path / "out").counts()["submitted"] == 4


# -- an outage after the provider answered ------------------------------------------------------------

class Outage(httpx.AsyncBaseTransport):
    """The simulator's transport, unreachable (connection refused) for ``lasting`` seconds from
    ``after`` seconds past its first request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, after: float, lasting: float) -> None:
        self.inner, self.after, self.lasting = inner, after, lasting
        self.start: float | None = None
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        now = anyio.current_time()
        if self.start is None:
            self.start = now + self.after
        if self.start <= now < self.start + self.lasting:
            self.refused += 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return await self.inner.handle_async_request(request)


def test_an_outage_after_success_is_waited_out_shown_and_fails_no_job(tmp_path: Path) -> None:
    sim = vsim(task_seconds=2.0)
    api = Outage(sim.api_transport(), after=3.0, lasting=90.0)
    options = real_options(tmp_path / "out", sim)
    options.api_transport = api
    batch = batch_for(tmp_path, 40, 8, options)
    seen: list[str] = []

    async def watch(batch: Batch) -> None:
        while True:
            await anyio.sleep(5)
            running = batch._running
            if running is not None:
                seen.append(render_progress(running.scheduler.stats, 1.0))

    summary, took = run(batch, alongside=watch)
    assert summary.done == 40 and summary.failed == 0 and summary.stopped is None
    assert took > 90
    assert any("provider unreachable for" in line for line in seen), seen
    # 90 s of outage: retries at the budget's trickle (20 at once, then one a second) plus the
    # poll loops' own first tries (8 tasks, backing off to a minute apart): about 2 a second.
    assert api.refused <= 20 + 90 + 8 * 8, api.refused
