"""The shared rate gate: a 429 pauses everyone, one probe goes first, submits are spaced."""

from __future__ import annotations

import random

import anyio
import pytest

from batchgen.provider.pacing import Backoff, RateGate

pytestmark = pytest.mark.anyio


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=8.0)
    rng = random.Random(1)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (9, 8)]:
        delay = backoff.delay(attempt, rng)
        assert ceiling / 2 <= delay <= ceiling


async def test_a_429_pauses_every_submitter_and_one_probe_goes_first() -> None:
    gate = RateGate(backoff=Backoff(base=0.05, cap=0.05))
    order: list[str] = []

    async def submitter(name: str) -> None:
        probe = await gate.wait()
        order.append(f"{name}:{'probe' if probe else 'go'}")
        if probe:
            await anyio.sleep(0.02)  # the probe's request is in flight; nobody may pass meanwhile
            order.append("probe done")
            gate.passed()

    assert gate.limited(retry_after=0.05) == 0.05
    assert gate.paused_for > 0
    async with anyio.create_task_group() as group:
        for name in "abc":
            group.start_soon(submitter, name)
    assert order[0].endswith(":probe") and order[1] == "probe done"
    assert sorted(order[2:]) == sorted(o for o in order[2:] if o.endswith(":go")) and len(order) == 4


async def test_submits_are_spaced_to_the_rate_limit() -> None:
    gate = RateGate(per_minute=1200)  # one every 50 ms
    start = anyio.current_time()
    for _ in range(5):
        await gate.wait()
    assert anyio.current_time() - start >= 4 * 0.05
