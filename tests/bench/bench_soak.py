"""Fault soak at scale: 10,000 jobs against the in-process simulator with every fault on at once.

The same faults as ``tests/engine/test_soak.py`` (429 10 %, 500 5 %, 503 3 %, drop 2 %, task failed
3 %, truncated download 5 %, expired URL 5 %): ``run``, then ``retry`` until every job is done
(at most --max-retries), then the folder is checked like the CI soak does (every image decodes
and matches its sidecar, ledger and files agree). Prints a markdown table: faults seen by kind,
runs needed, extra tasks created, maybe-duplicated submits, wall time, jobs/s.

These 429s are sporadic: each one makes only its own request wait (the Retry-After the
provider sends, or a short backoff), while the other submitters go on; ``--fault-429`` shows
what they still cost.

Run by hand: ``.venv/bin/python tests/bench/bench_soak.py [--jobs 10000] [--concurrency 64]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: faultkit

import anyio  # noqa: E402

from batchgen.provider.client import ClientOptions  # noqa: E402
from batchgen.manifest.loader import load_manifest  # noqa: E402
from batchgen.provider.pacing import Backoff  # noqa: E402
from batchgen.engine.runner import Batch, RunOptions  # noqa: E402
from batchgen.simulator import SimConfig, Simulator  # noqa: E402
from faultkit import simulated, check_folder, manifest_text  # noqa: E402

FAULTS = dict(fault_500=0.05, fault_503=0.03, fault_drop=0.02, fault_task_failed=0.03,
              fault_truncate=0.05, fault_expire=0.05)


def soak(jobs: int, concurrency: int, fault_429: float, retry_after: str, max_retries: int) -> dict:
    sim = Simulator(SimConfig(task_seconds=0.5, task_jitter=0.2, fault_seed=2024, fault_429=fault_429,
                              retry_after=retry_after, **FAULTS))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(manifest_text("soak", jobs, fmt="webp", concurrency=concurrency))
        out = Path(tmp) / "out"
        # Quicker backoff than the default so a 5xx costs ~0.1 s, not ~0.5 s; 429 pauses stay real.
        options = RunOptions(output=out, **simulated(sim),
                             client=ClientOptions(backoff=Backoff(base=0.1, cap=2.0, attempts=8)))
        manifest = load_manifest(path)
        start = time.perf_counter()
        summaries = []
        for attempt in range(max_retries + 1):
            batch = Batch(manifest, options)
            summary = anyio.run(batch.run if attempt == 0 else batch.retry)
            summaries.append(summary)
            print(f"  {'run' if attempt == 0 else 'retry'}: {summary.done}/{jobs} done, "
                  f"{summary.failed} failed {dict(summary.failures)}, "
                  f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
            if summary.done == jobs or summary.stopped:
                break
        wall = time.perf_counter() - start
        report = check_folder(out, "webp")
        in_ledger = report.ledger.stats.tasks_created
    stats = sim.stats
    failures: Counter[str] = Counter()
    for s in summaries[:-1]:
        failures.update(s.failures)
    return {"jobs": jobs, "done": summaries[-1].done, "runs": len(summaries), "wall": wall,
            "faults": stats.faults, "created": stats.tasks_created, "in_ledger": in_ledger,
            "orphans": stats.tasks_created_but_dropped,
            "maybe": sum(s.maybe_duplicated for s in summaries), "failures": failures,
            "submits": stats.submits, "polls": stats.polls, "downloads": stats.downloads,
            "outcomes": stats.downloads_by_outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-429", type=float, default=0.10)
    parser.add_argument("--retry-after", choices=["seconds", "date", "none", "mixed"], default="mixed")
    parser.add_argument("--max-retries", type=int, default=4)
    args = parser.parse_args()
    r = soak(args.jobs, args.concurrency, args.fault_429, args.retry_after, args.max_retries)
    jobs = r["jobs"]
    print(f"\n{jobs} jobs, in-process simulator (task 0.5 +- 0.2 s), webp 256x256, "
          f"{args.concurrency} in flight, 429 rate {args.fault_429:.2f} (Retry-After: "
          f"{args.retry_after}), {os.cpu_count()} cores\n")
    print("| measure | value |")
    print("|---|---:|")
    rows = [
        ("jobs done", f"{r['done']}/{jobs}"),
        ("runs needed (run + retries)", r["runs"]),
        ("wall time", f"{r['wall']:.0f} s"),
        ("jobs/s", f"{jobs / r['wall']:.1f}"),
        ("tasks created at the provider", r["created"]),
        ("extra tasks (beyond one per job)", r["created"] - jobs),
        ("  of which: resubmitted after a job failure", r["in_ledger"] - jobs),
        ("  of which: created without an id (drop after create)", r["orphans"]),
        ("maybe-duplicated submits reported", r["maybe"]),
        ("job failures before the last run", ", ".join(f"{k} {v}" for k, v in r["failures"].most_common()) or "-"),
        ("submit requests / job", f"{r['submits'] / jobs:.2f}"),
        ("polls / job", f"{r['polls'] / jobs:.2f}"),
        ("downloads / job", f"{r['downloads'] / jobs:.2f}"),
    ]
    for name in sorted(r["faults"]):
        rows.append((f"fault seen: {name}", r["faults"][name]))
    for name in sorted(r["outcomes"]):
        rows.append((f"download outcome: {name}", r["outcomes"][name]))
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
