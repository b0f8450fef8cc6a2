"""Efficiency benchmark: how full batchgen keeps the provider's slots, and what polls it spends.

2,000 jobs, 32 in flight, task time 1.0 +- 0.3 s, simulator capped at 32 tasks in flight, over
loopback HTTP. ratio = wall time / (sum of task times / 32): 1.0 would be slots never idle.
A slot frees only when a poll sees its task finished, so polls buy wall time; the table shows
the trade-off for a few poll settings, and the provider SDK's pattern (32 threads, submit, poll
every 0.5 s, download) as the comparison row.

Run by hand: ``.venv/bin/python tests/bench/bench_efficiency.py [--jobs 2000] [--rows default,sdk]``
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
from benchkit import SimProcess, scratch_dir

from batchgen.manifest.loader import load_manifest
from batchgen.engine.polling import PollPlanner
from batchgen.engine.runner import Batch, RunOptions
from batchgen.simulator import SimConfig

SLOTS = 32
KEY = "bench-key-0123456789abcdef"


def manifest_text(jobs: int, base_url: str) -> str:
    return (f"name: efficiency\nbase_url: {base_url}\nprompt: \"bench image {{n}}\"\n"
            f"size: \"256*256\"\noutput_format: webp\nconcurrency: {SLOTS}\n"
            f"matrix:\n  n: {{from: 1, to: {jobs}}}\n")


def sim_config(hints: bool = True) -> SimConfig:
    return SimConfig(task_seconds=1.0, task_jitter=0.3, max_in_flight=SLOTS, hints=hints,
                     retry_after="seconds", fault_seed=7)


def run_batchgen(jobs: int, planner: PollPlanner, hints: bool = True) -> dict:
    with SimProcess(sim_config(hints)) as sim, scratch_dir() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(manifest_text(jobs, sim.api_base_url))
        batch = Batch(load_manifest(path), RunOptions(
            output=Path(tmp) / "out", poll=planner,
            environ={"JIEKOU_API_KEY": KEY}))
        start = time.perf_counter()
        summary = anyio.run(batch.run)
        wall = time.perf_counter() - start
        assert summary.done == jobs, summary
        return _row(sim, wall, jobs)


def run_sdk_pattern(jobs: int) -> dict:
    """What the provider's own SDK does: a thread per slot, fixed 0.5 s polling, no retries."""
    with SimProcess(sim_config()) as sim, scratch_dir() as tmp:
        headers = {"Authorization": f"Bearer {KEY}"}
        local = threading.local()

        def one(n: int) -> None:
            if not hasattr(local, "api"):  # one connection pair per thread, like a long-lived SDK client
                local.api = httpx.Client(base_url=sim.api_base_url, headers=headers, timeout=30)
                local.images = httpx.Client(timeout=30)
            api, images = local.api, local.images
            task_id = api.post("/v3/async/z-image-turbo-lora", json={
                "prompt": f"bench image {n}", "size": "256*256", "output_format": "webp"}).json()["task_id"]
            while True:  # novita-client's wait_for_task: ask, then sleep 0.5 s
                result = api.get("/v3/async/task-result", params={"task_id": task_id}).json()
                if result["task"]["status"] == "TASK_STATUS_SUCCEED":
                    break
                time.sleep(0.5)
            data = images.get(result["images"][0]["image_url"]).content
            Path(tmp, f"{n}.webp").write_bytes(data)

        start = time.perf_counter()
        with ThreadPoolExecutor(SLOTS) as pool:
            list(pool.map(one, range(jobs)))
        wall = time.perf_counter() - start
        return _row(sim, wall, jobs)


def _row(sim: SimProcess, wall: float, jobs: int) -> dict:
    stats = sim.stats
    ideal = stats.task_seconds_total / SLOTS
    return {"wall": wall, "ideal": ideal, "ratio": wall / ideal, "polls_per_task": stats.polls / jobs,
            "tasks": stats.tasks_created, "rejected_429": stats.submits_by_outcome.get("RATE_LIMIT_EXCEEDED", 0)}


ROWS = {
    "default": ("batchgen default: first poll at q10 of learned durations, then at the finish "
                "estimated from progress", lambda jobs: run_batchgen(jobs, PollPlanner())),
    "q05": ("batchgen, first poll at q05", lambda jobs: run_batchgen(jobs, PollPlanner(first_quantile=0.05))),
    "q20": ("batchgen, first poll at q20", lambda jobs: run_batchgen(jobs, PollPlanner(first_quantile=0.2))),
    "q50": ("batchgen, first poll at q50", lambda jobs: run_batchgen(jobs, PollPlanner(first_quantile=0.5))),
    "nohints": ("batchgen, provider sends no eta/progress (learned durations, then backoff)",
                lambda jobs: run_batchgen(jobs, PollPlanner(), hints=False)),
    "sdk": ("provider SDK pattern: 32 threads, poll every 0.5 s", run_sdk_pattern),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rows", default=",".join(ROWS))
    args = parser.parse_args()
    print(f"{args.jobs} jobs, {SLOTS} in flight, task 1.0 +- 0.3 s, loopback, {os.cpu_count()} cores\n")
    print("| run | wall s | ideal s | wall / ideal | polls per task | 429s |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in args.rows.split(","):
        label, func = ROWS[key]
        row = func(args.jobs)
        print(f"| {label} | {row['wall']:.1f} | {row['ideal']:.1f} | {row['ratio']:.3f} "
              f"| {row['polls_per_task']:.2f} | {row['rejected_429']} |", flush=True)


if __name__ == "__main__":
    main()
