"""Durability benchmark: what the group commit (images and sidecars fsynced before "done")
costs, against the same batch with files left to the OS.

A zero-latency simulator runs in another process, so batchgen itself is what is measured, as
in ``bench_overhead.py``. Each configuration runs ``--repeat`` times, alternating, and the
table shows medians: jobs per second, CPU ms per job, fsync time per job (spent in the
committer's worker thread, beside the event loop) and how many group commits there were.

Run by hand: ``.venv/bin/python tests/bench/bench_durable.py [--jobs 2000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import anyio
from benchkit import SimProcess, cpu_seconds, scratch_dir

from batchgen.engine.runner import Batch, RunOptions
from batchgen.manifest.loader import load_manifest
from batchgen.simulator import SimConfig

KEY = "bench-key-0123456789abcdef"



def run(sim: SimProcess, jobs: int, concurrency: int, size: str, durable: bool) -> dict:
    with scratch_dir() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(
            f"name: durable\nbase_url: {sim.api_base_url}\nprompt: \"durable {{n}}\"\n"
            f"size: \"{size}\"\noutput_format: webp\nconcurrency: {concurrency}\n"
            f"matrix:\n  n: {{from: 1, to: {jobs}}}\n")
        batch = Batch(load_manifest(path), RunOptions(output=Path(tmp) / "out", durable=durable,
                                                      environ={"JIEKOU_API_KEY": KEY}))
        cpu = cpu_seconds()
        start = time.perf_counter()
        summary = anyio.run(batch.run)
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
    assert summary.done == jobs, summary
    return {"rate": jobs / wall, "cpu_ms": cpu / jobs * 1000,
            "fsync_ms": summary.sync_seconds / jobs * 1000, "syncs": summary.syncs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size", default="256*256")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.jobs} jobs of {args.size} webp, zero-latency simulator in another process, "
          f"{args.concurrency} in flight, {os.cpu_count()} cores, medians of {args.repeat}\n")
    rows: dict[bool, list[dict]] = {True: [], False: []}
    with SimProcess(SimConfig(task_seconds=0)) as sim:
        for _ in range(args.repeat):
            for durable in (True, False):
                rows[durable].append(run(sim, args.jobs, args.concurrency, args.size, durable))
    print("| files | jobs/s | CPU ms per job | fsync ms per job (worker thread) | group commits |")
    print("|---|---:|---:|---:|---:|")
    for durable, label in ((True, "fsynced before done (default)"), (False, "left to the OS")):
        med = {k: statistics.median(r[k] for r in rows[durable]) for k in rows[durable][0]}
        commits = f"{med['syncs']:.0f}" if durable else "-"
        print(f"| {label} | {med['rate']:.0f} | {med['cpu_ms']:.2f} | {med['fsync_ms']:.2f} "
              f"| {commits} |")


if __name__ == "__main__":
    main()
