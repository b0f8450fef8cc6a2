"""Overhead benchmark: batchgen beside the floor, a minimal client doing the same work per job.

A zero-latency simulator (tasks done at the first poll) runs in a process of its own, so what
is measured is the client: batchgen end to end (manifest streaming, ledger, limits, submit,
poll, download, full decode check, atomic image and sidecar writes) against ``floor.py``
(submit, poll, download, full decode, image + sidecar + one ledger line, nothing else), over
the same httpx transport. The two alternate, ``--repeat`` times each, and the table gives
medians (and ranges): jobs per second, CPU milliseconds per job in the client's process (all
threads), and batchgen's pace as a share of the floor's. Goal: >= 0.9x the floor.

Run by hand: ``.venv/bin/python tests/bench/bench_overhead.py [--jobs 3000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import anyio
from benchkit import SimProcess, scratch_dir
from floor import run_floor

from batchgen.engine.runner import Batch, RunOptions
from batchgen.manifest.loader import load_manifest
from batchgen.simulator import SimConfig

KEY = "bench-key-0123456789abcdef"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(func, jobs: int) -> dict:
    cpu = cpu_seconds()
    start = time.perf_counter()
    func()
    wall = time.perf_counter() - start
    return {"rate": jobs / wall, "cpu_ms": (cpu_seconds() - cpu) / jobs * 1000}


def batchgen_run(sim: SimProcess, jobs: int, concurrency: int, fmt: str, base64: bool) -> dict:
    with scratch_dir() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(
            f"name: overhead\nbase_url: {sim.api_base_url}\nprompt: \"overhead {{n}}\"\n"
            f"size: \"256*256\"\noutput_format: {fmt}\nenable_base64_output: {str(base64).lower()}\n"
            f"concurrency: {concurrency}\nmatrix:\n  n: {{from: 1, to: {jobs}}}\n")
        batch = Batch(load_manifest(path), RunOptions(output=Path(tmp) / "out",
                                                      environ={"JIEKOU_API_KEY": KEY}))
        summary = {}
        row = measure(lambda: summary.setdefault("s", anyio.run(batch.run)), jobs)
        assert summary["s"].done == jobs, summary["s"]
        return row


def floor_run(sim: SimProcess, jobs: int, concurrency: int, fmt: str) -> dict:
    with scratch_dir() as tmp:
        return measure(lambda: anyio.run(run_floor, sim.api_base_url, KEY, jobs, concurrency,
                                         Path(tmp) / "out", fmt), jobs)


def summarize(rows: list[dict], key: str) -> tuple[float, float, float]:
    values = [r[key] for r in rows]
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="webp", help="comma-separated: webp,png,base64")
    args = parser.parse_args()
    print(f"{args.jobs} jobs, zero-latency simulator in another process, 256x256 images, "
          f"{args.concurrency} in flight, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{args.repeat} alternating runs each (median, range)\n")
    print("| output | client | jobs/s | CPU ms per job | pace / floor |")
    print("|---|---|---:|---:|---:|")
    with SimProcess(SimConfig(task_seconds=0)) as sim:
        for spec in args.formats.split(","):
            base64 = spec == "base64"
            fmt = "webp" if base64 else spec
            floor_rows, ours = [], []
            for _ in range(args.repeat):
                floor_rows.append(floor_run(sim, args.jobs, args.concurrency, fmt) if not base64
                                  else {"rate": float("nan"), "cpu_ms": float("nan")})
                ours.append(batchgen_run(sim, args.jobs, args.concurrency, fmt, base64))
            label = f"{fmt}, {'base64' if base64 else 'URL download'}"
            ratios = [o["rate"] / f["rate"] for o, f in zip(ours, floor_rows)]
            for name, rows in (("floor (tests/bench/floor.py)", floor_rows), ("batchgen", ours)):
                if base64 and name.startswith("floor"):
                    continue
                rate = summarize(rows, "rate")
                cpu = summarize(rows, "cpu_ms")
                share = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                         if name == "batchgen" and not base64 else "")
                print(f"| {label} | {name} | {rate[0]:.0f} ({rate[1]:.0f}-{rate[2]:.0f}) "
                      f"| {cpu[0]:.2f} ({cpu[1]:.2f}-{cpu[2]:.2f}) | {share} |", flush=True)


if __name__ == "__main__":
    main()
