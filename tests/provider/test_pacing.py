"""Per-request backoff: grows, jitters, and is capped."""

from __future__ import annotations

import random

from batchgen.provider.pacing import Backoff


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=8.0)
    rng = random.Random(1)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (9, 8)]:
        delay = backoff.delay(attempt, rng)
        assert ceiling / 2 <= delay <= ceiling
