"""The best pace any client can keep when 429s come at random and Retry-After is honoured.

A model, not a run: ``tasks`` tasks whose durations are drawn as the simulator draws them,
``slots`` of them in flight at once, and every request (submit or poll) refused with
probability ``p``; a refusal names a wait (``Retry-After``) or leaves the client to back off
(``ClientOptions().overload_backoff``, batchgen's own). The client modelled knows the instant
each task ends: its slot frees then, and it polls the task exactly then, once. No real client
does better on these dice: every poll before the end is one more chance of a refusal, and one
after it is late. What it cannot avoid is the point: a refused poll or submit of one of the
last jobs costs the wait the provider named, and nothing is left to fill the slots meanwhile.

The pace is the run without 429s over the run with them, for the same durations; the figures
are the median and the 10th and 90th percentiles over ``dice`` draws. bench_limits.py prints
them beside the measured pace of the random-429 rows.

Run by hand: ``.venv/bin/python tests/bench/pace_bound.py [--dice 1000]``
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections.abc import Callable

from batchgen.provider.client import ClientOptions

__all__ = ["bound"]

RETRY_AFTER = 1.0


def _waits(style: str, p: float, rng: random.Random) -> Callable[[int], float | None]:
    """The wait after a request's ``k``-th refusal, or None when it is answered."""
    backoff = ClientOptions().overload_backoff

    def wait(k: int) -> float | None:
        if rng.random() >= p:
            return None
        named = style in ("seconds", "ms") or (style == "half" and rng.random() < 0.5)
        return RETRY_AFTER if named else backoff.delay(k, rng)
    return wait


def _wall(durations: list[float], slots: int, wait: Callable[[int], float | None]) -> float:
    """When the last task is seen, for the client that knows when each task ends."""
    ready = [(0.0, 0, job, 0) for job in range(len(durations))]   # (time, order, job, refusals)
    free = [0.0] * slots
    end = 0.0
    while ready:
        at, _, job, refused = heapq.heappop(ready)
        slot = heapq.heappop(free)
        sent = max(at, slot)
        delay = wait(refused)
        if delay is not None:   # refused: the slot stays free, the job goes first when it may
            heapq.heappush(ready, (sent + delay, -1, job, refused + 1))
            heapq.heappush(free, sent)
            continue
        ends = sent + durations[job]
        heapq.heappush(free, ends)
        seen, k = ends, 0
        while (delay := wait(k)) is not None:
            seen, k = seen + delay, k + 1
        end = max(end, seen)
    return end


def bound(style: str = "half", p: float = 0.10, tasks: int = 320, slots: int = 32,
          task: float = 0.5, jitter: float = 0.1, dice: int = 1000) -> tuple[float, float, float]:
    """Median, 10th and 90th percentile of the best pace over ``dice`` draws."""
    paces = []
    for seed in range(dice):
        rng = random.Random(seed)
        durations = [max(0.05, rng.gauss(task, jitter)) for _ in range(tasks)]
        clean = _wall(durations, slots, _waits(style, 0.0, rng))
        noisy = _wall(durations, slots, _waits(style, p, rng))
        paces.append(clean / noisy)
    paces.sort()
    return statistics.median(paces), paces[dice // 10], paces[dice * 9 // 10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dice", type=int, default=1000)
    args = parser.parse_args()
    print(f"best pace, 320 tasks of 0.5 s, 32 in flight, 10 % of requests refused; {args.dice} dice\n")
    print("| 429s carry | median | 10th-90th percentile |")
    print("|---|---:|---:|")
    for style, what in (("half", "Retry-After: 1 on half of them"), ("ms", "retry-after-ms: 1000 on all"),
                        ("none", "nothing (batchgen's backoff)")):
        median, low, high = bound(style, dice=args.dice)
        print(f"| {what} | {median:.2f}x | {low:.2f}-{high:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
