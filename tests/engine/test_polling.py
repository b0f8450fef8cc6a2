"""When tasks are polled: learned first poll, progress and eta hints, bounded backoff."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from trio.testing import MockClock

from batchgen.engine.polling import PollPlanner, TaskClock
from batchgen.provider.wire import parse_task_result
from batchgen.simulator import SimConfig, Simulator
from faultkit import fast_options, manifest_text, run_batch, simulated, write_manifest


def answer(status: str = "TASK_STATUS_PROCESSING", eta=None, progress=None):
    return parse_task_result({"task": {"status": status, "eta": eta, "progress_percent": progress}})


def test_first_poll_is_cold_then_learned_from_finished_tasks() -> None:
    planner = PollPlanner(cold_first=1.0, first_quantile=0.1)
    assert planner.first_delay() == 1.0
    for seconds in [2.0 + i / 100 for i in range(100)]:  # tasks took 2.00 .. 2.99 s
        planner.learn(seconds)
    assert planner.first_delay() == pytest.approx(2.10)
    assert planner.first_delay(already_waited=1.5) == pytest.approx(0.60)  # a resumed task
    assert planner.first_delay(already_waited=10) == planner.min_delay


def test_progress_aims_at_the_estimated_finish() -> None:
    planner = PollPlanner(margin=0.0, lateness=0.0)
    clock = TaskClock(submitted_at=0.0)
    # 40% after 2 s: 3 s to go
    assert planner.next_delay(clock, answer(progress=40), now=2.0) == pytest.approx(3.0)
    # with two readings the rate comes from their difference (here a late start: 10%/s)
    assert planner.next_delay(clock, answer(progress=60), now=4.0) == pytest.approx(4.0)


def test_eta_in_whole_seconds_polls_before_the_rounded_up_end() -> None:
    planner = PollPlanner()
    delay = planner.next_delay(TaskClock(submitted_at=0.0), answer("TASK_STATUS_QUEUED", eta=3, progress=0), now=0.5)
    assert 2.0 <= delay < 3.0


def test_without_progress_it_aims_at_the_middle_of_the_learned_durations_still_possible() -> None:
    planner = PollPlanner(margin=0.0)
    for i in range(101):
        planner.learn(1.0 + i / 100)  # 1.00 .. 2.00 s
    clock = TaskClock(submitted_at=0.0)
    # not done at 1.2 s: the durations still possible are 1.21 .. 2.00, their middle is ~1.6
    assert planner.next_delay(clock, answer(), now=1.2) == pytest.approx(0.41, abs=0.011)
    # eta 1 (rounded up) at 0.5 s: it ends in (0.5, 1.5]; learned ones there: 1.00 .. 1.50
    assert planner.next_delay(clock, answer(eta=1), now=0.5) == pytest.approx(0.75, abs=0.011)


def test_without_hints_the_delay_backs_off_and_stays_bounded() -> None:
    planner = PollPlanner(backoff_start=0.5, backoff_factor=1.5, max_delay=10.0)
    clock = TaskClock(submitted_at=0.0)
    delays = [planner.next_delay(clock, answer("TASK_STATUS_UNKNOWN"), now=float(n)) for n in range(12)]
    assert delays[0] == 0.5 and delays[1] == 0.75
    assert all(b >= a for a, b in zip(delays, delays[1:]))
    assert max(delays) == 10.0


def test_a_provider_that_finishes_at_once_is_not_left_idle_by_the_first_poll(tmp_path: Path) -> None:
    # In virtual time, tasks done at once: the first 32 wait only for the cold first poll
    # (a quarter second; a full second left every slot idle that long), the rest for the
    # learned durations.
    manifest = write_manifest(tmp_path, manifest_text("instant", 96, fmt="webp", concurrency=32))
    sim = Simulator(SimConfig(task_seconds=0.0, task_jitter=0.0), clock=anyio.current_time)
    summary = run_batch(manifest, fast_options(tmp_path / "out", **simulated(sim), poll=PollPlanner()),
                        clock=MockClock(autojump_threshold=0))
    assert summary.done == 96
    assert summary.elapsed < 0.5
    assert sim.stats.polls <= 96 * 1.1
