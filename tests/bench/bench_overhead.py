"""Overhead benchmark: batchgen's own cost per job, end to end, against a zero-latency simulator.

The simulator runs in a separate process with tasks that finish at once, so what is measured is
batchgen: manifest streaming, ledger appends, submit, poll, download, decoding check, atomic
writes of image and sidecar. Prints jobs per second and CPU milliseconds per job (this process,
all threads). Goal: >= 300 jobs/s on a 2-core machine.

Run by hand: ``.venv/bin/python tests/bench/bench_overhead.py [--jobs 3000] [--concurrency 64]``
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import anyio
from benchkit import SimProcess, scratch_dir

from batchgen.manifest.loader import load_manifest
from batchgen.engine.runner import Batch, RunOptions
from batchgen.simulator import SimConfig

KEY = "bench-key-0123456789abcdef"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(jobs: int, concurrency: int, fmt: str, base64: bool) -> dict:
    with SimProcess(SimConfig(task_seconds=0)) as sim, scratch_dir() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(
            f"name: overhead\nbase_url: {sim.api_base_url}\nprompt: \"overhead {{n}}\"\n"
            f"size: \"256*256\"\noutput_format: {fmt}\nenable_base64_output: {str(base64).lower()}\n"
            f"concurrency: {concurrency}\nmatrix:\n  n: {{from: 1, to: {jobs}}}\n")
        batch = Batch(load_manifest(path), RunOptions(output=Path(tmp) / "out",
                                                      environ={"JIEKOU_API_KEY": KEY}))
        cpu = cpu_seconds()
        start = time.perf_counter()
        summary = anyio.run(batch.run)
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
        stats = sim.stats
    assert summary.done == jobs, summary
    return {"wall": wall, "rate": jobs / wall, "cpu_ms": cpu / jobs * 1000,
            "requests": (stats.api_requests + stats.image_requests) / jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(f"{args.jobs} jobs, zero-latency simulator in another process, 256x256 images, "
          f"{args.concurrency} in flight, {os.cpu_count()} cores\n")
    print("| output | jobs/s | CPU ms per job (batchgen) | requests per job | wall s |")
    print("|---|---:|---:|---:|---:|")
    for fmt, base64 in (("webp", False), ("png", False), ("webp", True)):
        row = run(args.jobs, args.concurrency, fmt, base64)
        label = f"{fmt}, {'base64' if base64 else 'URL download'}"
        print(f"| {label} | {row['rate']:.0f} | {row['cpu_ms']:.2f} | {row['requests']:.2f} "
              f"| {row['wall']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
