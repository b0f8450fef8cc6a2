"""Overhead benchmark: batchgen beside the floor, a minimal client doing the same work per job.

A zero-latency simulator (tasks done at the first poll) runs in a process of its own, so what
is measured is the client: batchgen end to end (manifest streaming, ledger, limits, submit,
poll, download, full decode check, atomic image and sidecar writes) against ``floor.py``
(submit, poll, download, full decode, image + sidecar + one ledger line, nothing else).

Clients, each pair doing the same durability:

- ``floor`` / ``batchgen``: over httpx, nothing fsynced (``RunOptions(durable=False)``);
  ``floor-1submit`` keeps batchgen's rule of one submit on the wire at a time (a crash can
  cost at most one task), which bounds submits to one per round trip;
- ``floor-aiohttp`` / ``batchgen-aiohttp``: the same over aiohttp (batchgen's provider with
  aiohttp channels, ``aiohttp_provider.py``), to see what the HTTP layer itself costs;
- ``floor-durable`` / ``batchgen-durable``: files fsynced in groups before their ledger line
  (batchgen's default);
- ``batchgen-bar``: batchgen (not durable) with the CLI's live progress bar redrawn 4x a second.

Every round runs each client once, the order rotating from round to round, and the table
gives medians (and ranges) over ``--repeat`` rounds: jobs per second, CPU milliseconds per
job in the client's process (all threads) and in the simulator's, and the pace as a share of
the matching floor's in the same round. The machine's load average is printed before and after.
Goal: batchgen >= 0.9x the floor.

Run by hand: ``.venv/bin/python tests/bench/bench_overhead.py [--jobs 3000] [--repeat 3]
[--clients floor,batchgen,...]`` (the aiohttp pair needs ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from benchkit import SimProcess, cpu_seconds, scratch_dir
from floor import run_floor

from batchgen.engine.runner import Batch, RunOptions
from batchgen.manifest.loader import load_manifest
from batchgen.simulator import SimConfig

KEY = "bench-key-0123456789abcdef"
CLIENTS = ["floor", "floor-1submit", "batchgen", "floor-aiohttp", "floor-aiohttp-1submit",
           "batchgen-aiohttp", "floor-durable", "batchgen-durable", "batchgen-bar"]
# Each batchgen client against the floor doing the same (batchgen sends several submits at
# once above 8 tasks in flight; the one-submit floors stand beside ``parallel_submits=1``).
FLOOR_OF = {"batchgen": ["floor"],
            "batchgen-aiohttp": ["floor-aiohttp-1submit", "floor-aiohttp"],
            "batchgen-durable": ["floor-durable"], "batchgen-bar": ["floor-1submit", "floor"]}



def measure(func: Callable[[], object], jobs: int, sim: SimProcess) -> dict:
    cpu, sim_cpu = cpu_seconds(), sim.cpu_seconds
    start = time.perf_counter()
    func()
    wall = time.perf_counter() - start
    return {"rate": jobs / wall, "cpu_ms": (cpu_seconds() - cpu) / jobs * 1000,
            "sim_ms": (sim.cpu_seconds - sim_cpu) / jobs * 1000}


def batchgen_run(sim: SimProcess, jobs: int, concurrency: int, fmt: str, base64: bool,
                 durable: bool = False, http: str = "httpx", bar: bool = False) -> dict:
    with scratch_dir() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(
            f"name: overhead\nbase_url: {sim.api_base_url}\nprompt: \"overhead {{n}}\"\n"
            f"size: \"256*256\"\noutput_format: {fmt}\nenable_base64_output: {str(base64).lower()}\n"
            f"concurrency: {concurrency}\nmatrix:\n  n: {{from: 1, to: {jobs}}}\n")
        reporter = None
        if bar:
            from batchgen.cli.progress import ProgressMode, ProgressReporter

            reporter = ProgressReporter(mode=ProgressMode.LIVE, stream=io.StringIO())
        options = RunOptions(output=Path(tmp) / "out", base_url=sim.api_base_url,
                             environ={"JIEKOU_API_KEY": KEY},
                             durable=durable, reporter=reporter)
        if http == "aiohttp":
            from aiohttp_provider import AiohttpBatch

            batch = AiohttpBatch(load_manifest(path), options)
        else:
            batch = Batch(load_manifest(path), options)
        summary = {}
        row = measure(lambda: summary.setdefault("s", anyio.run(batch.run)), jobs, sim)
        assert summary["s"].done == jobs, summary["s"]
        return row


def floor_run(sim: SimProcess, jobs: int, concurrency: int, fmt: str, http: str = "httpx",
              durable: bool = False, submits_at_once: int | None = None) -> dict:
    with scratch_dir() as tmp:
        return measure(lambda: anyio.run(lambda: run_floor(
            sim.api_base_url, KEY, jobs, concurrency, Path(tmp) / "out", fmt, http=http,
            durable=durable, submits_at_once=submits_at_once)), jobs, sim)


def run_client(name: str, sim: SimProcess, args: argparse.Namespace, fmt: str, base64: bool) -> dict:
    http = "aiohttp" if "aiohttp" in name else "httpx"
    durable = "durable" in name
    if name.startswith("floor"):
        if base64:
            return {"rate": float("nan"), "cpu_ms": float("nan"), "sim_ms": float("nan")}
        return floor_run(sim, args.jobs, args.concurrency, fmt, http, durable,
                         1 if name.endswith("1submit") else None)
    return batchgen_run(sim, args.jobs, args.concurrency, fmt, base64, durable, http,
                        bar=name == "batchgen-bar")


def cell(values: list[float], digits: int) -> str:
    values = [v for v in values if v == v]
    if not values:
        return ""
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="webp", help="comma-separated: webp,png,base64")
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help=f"comma-separated, of: {', '.join(CLIENTS)}")
    args = parser.parse_args()
    clients = args.clients.split(",")
    print(f"{args.jobs} jobs, zero-latency simulator in another process, 256x256 images, "
          f"{args.concurrency} in flight, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, {args.repeat} rounds, each client once per round in "
          f"rotating order (median, range)\n", flush=True)
    print("| output | client | jobs/s | client CPU ms/job | simulator CPU ms/job | pace / floor |")
    print("|---|---|---:|---:|---:|---:|")
    with SimProcess(SimConfig(task_seconds=0)) as sim:
        for spec in args.formats.split(","):
            base64 = spec == "base64"
            fmt = "webp" if base64 else spec
            rows: dict[str, list[dict]] = {name: [] for name in clients}
            for round_ in range(args.repeat):
                shift = round_ % len(clients)
                for name in clients[shift:] + clients[:shift]:
                    rows[name].append(run_client(name, sim, args, fmt, base64))
            label = f"{fmt}, {'base64' if base64 else 'URL download'}"
            for name in clients:
                floor = next((f for f in FLOOR_OF.get(name, []) if f in rows), None)
                share = ""
                if floor is not None and not base64:
                    share = cell([o["rate"] / f["rate"] for o, f in zip(rows[name], rows[floor])],
                                 2) + f" of {floor}"
                if base64 and name.startswith("floor"):
                    continue
                r = rows[name]
                print(f"| {label} | {name} | {cell([x['rate'] for x in r], 0)} "
                      f"| {cell([x['cpu_ms'] for x in r], 2)} | {cell([x['sim_ms'] for x in r], 2)} "
                      f"| {share} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
