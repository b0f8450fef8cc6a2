"""Limits benchmark: every way the provider pushes back, in one table, over loopback.

The simulator runs in a process of its own with the matching setting; batchgen runs in this
process (or as the real CLI where a signal or a kill is the point). For each scenario the table
gives wall time over the ideal (the least time the provider's limit allows), 429s received per
job, the adaptive limit's path over the run (min / median / max of the limit in force at each
accepted submit), and what else the goal asks for. The goals are the issue's right-hand column.

Run by hand: ``.venv/bin/python tests/bench/bench_limits.py [--repeat 3] [--only cap,rpm,...]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import anyio
from benchkit import SimProcess, scratch_dir
from floor import run_floor
from pace_bound import bound

from batchgen.engine.runner import Batch, RunOptions, RunSummary
from batchgen.manifest.loader import load_manifest
from batchgen.simulator import SimConfig
from batchgen.storage.ledger import Ledger

KEY = "bench-key-0123456789abcdef"
TASK = 0.5


def manifest(folder: Path, base_url: str, jobs: int, concurrency: int, extra: str = "") -> Path:
    path = folder / "m.yaml"
    path.write_text(f"name: limits\nbase_url: {base_url}\nprompt: \"limits {{n}}\"\nsize: \"256*256\"\n"
                    f"output_format: png\nconcurrency: {concurrency}\nfilename: \"img-{{n}}\"\n{extra}"
                    f"matrix:\n  n: {{from: 1, to: {jobs}}}\n")
    return path


def run_in_process(config: SimConfig, jobs: int, concurrency: int, **options) -> dict:
    with SimProcess(config) as sim, scratch_dir() as tmp:
        path = manifest(Path(tmp), sim.api_base_url, jobs, concurrency)
        batch = Batch(load_manifest(path), RunOptions(output=Path(tmp) / "out", base_url=sim.api_base_url,
                                                      environ={"JIEKOU_API_KEY": KEY}, **options))
        start, began = time.perf_counter(), time.monotonic()   # (the simulator's clock too)
        summary: RunSummary = anyio.run(batch.run)
        wall = time.perf_counter() - start
        stats = sim.stats
    assert summary.done == jobs and summary.failed == 0, summary
    p = summary.pacing
    return {"wall": wall, "began": began, "task_total": stats.task_seconds_total,
            "refused": stats.submits_by_outcome.get("RATE_LIMIT_EXCEEDED", 0) / jobs,
            "limit": (p.limit_min, p.limit_median, p.limit_max), "window": p.window,
            "learned": p.window_learned, "retries": p.retries}


def rate_ideal(jobs: int, rpm: int) -> float:
    return (-(-jobs // rpm) - 1) * 60.0 + TASK


def fixed_ideal(jobs: int, rpm: int, concurrency: int, began: float) -> float:
    """A fixed window's least time: the clock minute the batch starts in takes ``rpm``, the
    last job goes at the start of the minute that has room for it; never under what the
    concurrency allows alone. Where the minute falls decides it (a batch that starts a second
    before a minute ends may straddle two and never be refused)."""
    windows = -(-jobs // rpm) - 1
    opens = (math.floor(began / 60.0) + windows) * 60.0 if windows else began
    return max(opens - began + TASK, -(-jobs // concurrency) * TASK)


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "batchgen", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ended(proc: subprocess.Popen) -> None:
    """Stop the benchmark with what the CLI said if it exited with an error."""
    if proc.poll():
        out, err = proc.communicate()
        raise SystemExit(f"batchgen exited {proc.returncode}: {err or out}")


def cell(values: list[float], fmt: str = "{:.2f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def path_cell(paths: list[tuple[int, int, int]]) -> str:
    lows, meds, highs = zip(*paths)
    return f"{min(lows)} / {statistics.median(meds):g} / {max(highs)}"


# -- scenarios ---------------------------------------------------------------------------------------

def cap(repeat: int) -> list[str]:
    rows = [run_in_process(SimConfig(task_seconds=TASK, task_jitter=0.1, max_in_flight=8, retry_after="none"),
                           240, 32) for _ in range(repeat)]
    ratios = [r["wall"] / (r["task_total"] / 8) for r in rows]
    return ["provider caps tasks in flight at 8, `--concurrency 32`, 240 tasks of 0.5 s", "<= 1.15",
            cell(ratios), cell([r["refused"] for r in rows]), path_cell([r["limit"] for r in rows]), ""]


def rpm(repeat: int, told: bool, counts: str = "accepted", window: str = "sliding") -> list[str]:
    config = SimConfig(task_seconds=TASK, task_jitter=0.1, rpm=60, retry_after="none",
                       rpm_counts=counts, rpm_window=window)
    rows = [run_in_process(config, 90, 32, **({"rate_limit": 60} if told else {})) for _ in range(repeat)]
    ratios = [r["wall"] / (fixed_ideal(90, 60, 32, r["began"]) if window == "fixed" else rate_ideal(90, 60))
              for r in rows]
    shape = (f"60 submits per {window} minute, "
             + ("refused ones counted too" if counts == "all" else "only accepted ones counted"))
    what = f"{shape}, told `--rpm 60`" if told else f"{shape}, 429 without Retry-After, 90 tasks, learned"
    learned = "" if told else "window learned: " + ", ".join(
        f"{r['window']}/min" if r["window"] else "none (never refused)" for r in rows)
    return [what, "<= 1.05, 0 429s" if told else "<= 1.2", cell(ratios), cell([r["refused"] for r in rows]),
            path_cell([r["limit"] for r in rows]), learned]


def sporadic(repeat: int, retry_after: str = "half", polls: bool = True, cap: int | None = None) -> list[str]:
    paces, refused, paths, budget = [], [], [], []
    base = dict(task_seconds=TASK, task_jitter=0.1, max_in_flight=cap, retry_after=retry_after)
    for _ in range(repeat):   # alternate the clean and the noisy run
        clean = run_in_process(SimConfig(**base), 320, 32)
        noisy = run_in_process(SimConfig(**base, fault_429=0.10, fault_429_poll=0.10 if polls else 0.0,
                                         fault_seed=len(paces)), 320, 32)
        paces.append(clean["wall"] / noisy["wall"])
        refused.append(noisy["refused"])
        paths.append(noisy["limit"])
        budget.append(noisy["retries"])
    walls = [1 / p for p in paces]
    where = "submits and polls" if polls else "submits"
    told = {"half": "half with Retry-After: 1", "none": "no Retry-After", "ms": "retry-after-ms: 1000"}[retry_after]
    capped = f", provider caps tasks in flight at {cap}" if cap else ""
    best = ""
    if cap is None and polls:   # what a client that sees each task end the instant it ends keeps
        median, low, high = bound(retry_after)
        best = f"; the best any client keeps on such dice (pace_bound.py): {median:.2f} ({low:.2f}-{high:.2f})x"
    return [f"10 % of {where} answered 429 at random ({told}){capped}, 320 tasks, `--concurrency 32`",
            "pace >= 0.85x" if cap is None else "limit finds the cap", cell(walls) + " (of the run without 429s)",
            cell(refused), path_cell(paths),
            f"pace {cell(paces)}x of the run without 429s; retries paid from the budget {cell(budget, '{:.0f}')}"
            + best]


def sigterm(repeat: int) -> list[str]:
    outs, after = [], []
    for _ in range(repeat):
        config = SimConfig(task_seconds=2.0, task_jitter=0.2, max_in_flight=4, retry_after="seconds")
        with SimProcess(config) as sim, scratch_dir() as tmp:
            path = manifest(Path(tmp), sim.api_base_url, 32, 32)
            proc = cli("run", str(path), "--base-url", sim.api_base_url, "--output", str(Path(tmp) / "out"),
                       "--quiet")
            while not sim.stats.submits_by_outcome.get("RATE_LIMIT_EXCEEDED"):
                ended(proc)
                time.sleep(0.01)
            time.sleep(0.3)
            submits = sim.stats.submits
            proc.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            proc.communicate(timeout=60)
            outs.append(time.perf_counter() - signalled)
            after.append(sim.stats.submits - submits)
    return ["SIGTERM while a 429 pause is running (cap 4 in flight, 32 wanted)", "out within 10 s, no new submit",
            "", "", "", f"out {cell(outs, '{:.1f}')} s after the signal; submits after it: {max(after)}"]


def dead_port(repeat: int) -> list[str]:
    outs, failed, named = [], [], True
    for _ in range(repeat):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with scratch_dir() as tmp:
            path = manifest(Path(tmp), "https://api.jiekou.ai", 400, 32)
            start = time.perf_counter()
            proc = cli("run", str(path), "--base-url", url, "--output", str(Path(tmp) / "out"), "--quiet")
            stdout, _ = proc.communicate(timeout=120)
            outs.append(time.perf_counter() - start)
            named = named and proc.returncode == 3 and url in stdout and "--base-url" in stdout
            failed.append(Ledger.read(Path(tmp) / "out").counts()["failed"])
    return ["`--base-url` where nothing listens, 400 jobs", "stop within 30 s naming the URL; no job failed",
            "", "", "", f"exit 3 after {cell(outs, '{:.1f}')} s, URL and origin named: {named}; "
                        f"jobs failed: {max(failed)}"]


def expiry(repeat: int) -> list[str]:
    lost, extra = [], []
    for _ in range(repeat):
        config = SimConfig(task_seconds=0.2, task_jitter=0.05, url_ttl=2.0, download_seconds=0.5,
                           fault_truncate=0.05, fault_seed=len(lost))
        jobs = 48
        with SimProcess(config) as sim, scratch_dir() as tmp:
            path = manifest(Path(tmp), sim.api_base_url, jobs, 16)
            args = ("run", str(path), "--base-url", sim.api_base_url, "--output", str(Path(tmp) / "out"), "--quiet")
            for wait_for in (10, 22, 34):
                proc = cli(*args)
                while sim.stats.downloads_by_outcome.get("ok", 0) < wait_for and proc.poll() is None:
                    time.sleep(0.01)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
            final = cli(*args)
            final.communicate(timeout=300)
            ended(final)
            created = sim.stats.tasks_created
            ledger = Ledger.read(Path(tmp) / "out")
            lost.append(jobs - ledger.counts()["done"])
            extra.append(created - jobs)
    return ["image URLs live 2 s, downloads 0.5 s each, 3 kill -9s (48 jobs, 16 in flight)",
            "never lose a job to expiry", "", "", "",
            f"jobs lost: {sum(lost)} in {repeat} runs; tasks beyond one per job: {cell(extra, '{:.0f}')} "
            f"(a kill may cost each submit then on the wire: up to 4 at 16 in flight)"]


def overhead(repeat: int) -> list[str]:
    rates: dict[str, list[float]] = {"floor": [], "batchgen": []}
    with SimProcess(SimConfig(task_seconds=0)) as sim:
        for round_ in range(repeat):
            for name in list(rates)[::1 if round_ % 2 else -1]:  # each goes first every other round
                with scratch_dir() as tmp:
                    start = time.perf_counter()
                    if name == "floor":
                        # As durable as batchgen's default: files fsynced before their line.
                        anyio.run(partial(run_floor, sim.api_base_url, KEY, 3000, 32,
                                          Path(tmp) / "out", "png", durable=True))
                    else:
                        path = manifest(Path(tmp), sim.api_base_url, 3000, 32)
                        batch = Batch(load_manifest(path), RunOptions(output=Path(tmp) / "out",
                                                                      base_url=sim.api_base_url,
                                                                      environ={"JIEKOU_API_KEY": KEY}))
                        assert anyio.run(batch.run).done == 3000
                    rates[name].append(3000 / (time.perf_counter() - start))
    ratios = [b / f for b, f in zip(rates["batchgen"], rates["floor"])]
    return ["zero-latency simulator in another process, 3,000 jobs", ">= 1.0x of a minimal client", "", "", "",
            f"{cell(rates['batchgen'], '{:.0f}')} jobs/s, {cell(ratios)}x of the floor "
            f"({cell(rates['floor'], '{:.0f}')} jobs/s), both fsyncing; see bench_overhead.py"]


SCENARIOS = {
    "cap": cap,
    "rpm": lambda repeat: rpm(repeat, told=False),
    "rpm-told": lambda repeat: rpm(repeat, told=True),
    "rpm-all": lambda repeat: rpm(repeat, told=False, counts="all"),
    "rpm-all-told": lambda repeat: rpm(repeat, told=True, counts="all"),
    "rpm-fixed-all": lambda repeat: rpm(repeat, told=False, counts="all", window="fixed"),
    "sporadic": sporadic,
    "sporadic-none": lambda repeat: sporadic(repeat, retry_after="none"),
    "sporadic-ms": lambda repeat: sporadic(repeat, retry_after="ms"),
    "sporadic-cap": lambda repeat: sporadic(repeat, retry_after="none", cap=8),
    "sigterm": sigterm,
    "dead-port": dead_port,
    "expiry": expiry,
    "overhead": overhead,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON lines")
    args = parser.parse_args()
    print(f"loopback, simulator in another process, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; medians of {args.repeat} runs (range)\n")
    print("| scenario | goal | wall / ideal | 429s per job | limit min / median / max | measured |")
    print("|---|---|---:|---:|---:|---|")
    for name in args.only.split(","):
        row = SCENARIOS[name](args.repeat)
        print("| " + " | ".join(row) + " |", flush=True)
        if args.json:
            print(json.dumps({"scenario": name, "row": row}), flush=True)


if __name__ == "__main__":
    main()
