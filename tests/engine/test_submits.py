"""Submits on the wire at once: one up to 8 tasks in flight, then one per 4 (at most 8), so a
provider a round trip away still has its slots kept full (in virtual time, against a simulator
that answers 0.2 s late)."""

from __future__ import annotations

from pathlib import Path

import anyio
from trio.testing import MockClock

from batchgen.provider.client import ClientOptions, submits_for
from batchgen.simulator import SimConfig, Simulator
from faultkit import FAST_BACKOFF, fast_options, manifest_text, run_batch, simulated, write_manifest


def run(tmp_path: Path, name: str, parallel: int | None) -> tuple[float, int]:
    manifest = write_manifest(tmp_path, manifest_text(name, 160, fmt="webp", concurrency=32),
                              name=f"{name}.yaml")
    sim = Simulator(SimConfig(task_seconds=1.0, task_jitter=0.0, api_seconds=0.2),
                    clock=anyio.current_time)
    clock = MockClock(autojump_threshold=0)
    options = fast_options(tmp_path / name, **simulated(sim),
                           client=ClientOptions(backoff=FAST_BACKOFF, parallel_submits=parallel))
    summary = run_batch(manifest, options, clock=clock)
    assert summary.done == 160
    return summary.elapsed, sim.stats.tasks_created


def test_submits_in_parallel_keep_a_distant_providers_slots_full(tmp_path: Path) -> None:
    assert [submits_for(c) for c in (1, 8, 9, 16, 32, 64, 1000)] == [1, 1, 3, 4, 8, 8, 8]
    one, created_one = run(tmp_path, "one", 1)
    auto, created_auto = run(tmp_path, "auto", None)
    # Each task takes 1 s plus a submit, a poll and a download of 0.2 s each: 160 of them over
    # 32 slots is at least 5 x 1.6 s = 8 s. One submit at a time allows 5 a second: 32 s.
    # Eight on the wire (the default for 32 in flight) come within 1.6x of that bound.
    assert one >= 30.0
    assert auto <= 1.6 * 8.0 and created_auto == created_one == 160

