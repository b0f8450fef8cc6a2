"""Scale benchmark: ledger replay time and peak memory for 10^4, 10^5 and 10^6 recorded jobs.

Run by hand: ``.venv/bin/python tests/bench/bench_ledger.py [--sizes 10000,100000,1000000]``.
Each size is measured in a fresh subprocess so peak RSS belongs to that size alone. Two shapes:
the ledger as a run leaves it before compaction (4 events per job) and after compaction.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a watercolor painting of a castle on a hill at dusk, highly detailed, soft light, {n}"


def write_ledger(folder: Path, jobs: int) -> None:
    """A ledger as a finished run of ``jobs`` jobs writes it: submitting, submitted, generated, done."""
    from batchgen.job import Job
    from batchgen.storage.ledger import Ledger

    ledger = Ledger.open(folder, "bench")
    for n in range(jobs):
        job = Job(job_id=f"{n:016x}", index=n, request={
            "prompt": PROMPT.format(n=n), "seed": n, "size": "1024*1024", "output_format": "webp",
            "enable_base64_output": False,
            "loras": [{"path": "https://example.com/loras/ghibli.safetensors", "scale": 0.5}]},
            axes={"style": "watercolor", "seed": n, "loras": "ghibli@0.5"}, replica=0, name=f"{n:016x}")
        ledger.submitting(job)
        ledger.submitted(job.job_id, f"830d9c90-d53f-4c5a-8009-{n:012x}")
        ledger.generated(job.job_id, n)
        ledger.done(job.job_id, f"images/{n:016x}.webp", 123456, "0" * 64)
    ledger.close()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited
    from the parent across exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(folder: str) -> None:
    """Child process: replay once, print JSON with seconds and memory (peak RSS: tracemalloc
    would slow replay down several times and distort the time)."""
    from batchgen.storage.ledger import Ledger

    base = peak_rss_mb()
    start = time.perf_counter()
    ledger = Ledger.open(Path(folder), "bench")
    seconds = time.perf_counter() - start
    jobs = len(ledger.records)
    replay_rss = peak_rss_mb()
    compact_start = time.perf_counter()
    ledger.compact()
    compact_seconds = time.perf_counter() - compact_start
    ledger.close()
    rss = peak_rss_mb()
    print(json.dumps({"jobs": jobs, "seconds": seconds, "baseline_mb": base,
                      "replay_rss_mb": replay_rss, "max_rss_mb": rss, "compact_seconds": compact_seconds}))


def child(folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(folder)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_ledger(folder, size)
            mb = os.path.getsize(folder / "ledger.jsonl") / 2**20
            raw = child(folder)        # replays 4 events per job, then compacts
            compacted = child(folder)  # replays the compacted file
        rows.append((size, mb, raw, compacted))
    print("| recorded jobs | ledger MB (4 events/job) | replay s | µs/job | peak RSS MB (baseline) "
          "| compact s | replay compacted s | µs/job | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, mb, raw, comp in rows:
        print(f"| {size:,} | {mb:.0f} | {raw['seconds']:.2f} | {raw['seconds'] / size * 1e6:.1f} "
              f"| {raw['replay_rss_mb']:.0f} ({raw['baseline_mb']:.0f}) | {raw['compact_seconds']:.2f} "
              f"| {comp['seconds']:.2f} | {comp['seconds'] / size * 1e6:.1f} | {comp['replay_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
