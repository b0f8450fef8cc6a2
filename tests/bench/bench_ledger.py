"""Scale benchmark: ledger replay time and peak memory for 10^4, 10^5 and 10^6 recorded jobs.

Run by hand: ``.venv/bin/python tests/bench/bench_ledger.py [--sizes 10000,100000,1000000]``.
Each size is measured in a fresh subprocess so peak RSS belongs to that size alone. Two shapes:
the ledger a run killed at the worst moment leaves (compacted as the run went, but for the
events of the last ``CHECKPOINT_LINES`` lines, 4 per job) and the ledger a finished run leaves
(compacted); ``batchgen status`` of the killed run's folder as a whole process, interpreter
start-up included; and the CPU time of writing the events through the Ledger's calls, with
the run's compactions and without.
"""

from __future__ import annotations

import argparse
import json
import shutil
from statistics import median
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PROMPT = "a watercolor painting of a castle on a hill at dusk, highly detailed, soft light, {n}"


def write_ledger(folder: Path, jobs: int, checkpoints: bool = True, worst: bool = True) -> float:
    """A ledger as a run of ``jobs`` jobs writes it, through the Ledger's own calls:
    submitting (with the job's spec), submitted (a provider's UUID task id), generated (the
    seed) and done (the image's path under the default ``{job_id:.3}/{job_id}`` names, its
    bytes and digest, the sidecar's bytes, the derived files' digest), as engine/commit.py
    records it; then closed without the compaction a run's end makes (killed). With
    ``worst``, the run's last compaction came just before the last ``CHECKPOINT_LINES - 4``
    lines; without ``checkpoints``, it made none. Returns the CPU seconds of the writing."""
    import hashlib

    from batchgen.job import Job
    from batchgen.storage.derived import derived_digest
    from batchgen.storage.ledger import CHECKPOINT_LINES, Ledger

    styles = ("watercolor", "oil", "ink", "pastel")
    ledger = Ledger.open(folder, "bench")
    if not checkpoints:
        ledger.checkpoint_lines = 1 << 62
    last = jobs - (CHECKPOINT_LINES // 4 - 1) if checkpoints and worst else -1
    cpu = time.process_time()
    for n in range(jobs):
        if n == last:
            ledger.compact()
        job_id = hashlib.sha256(n.to_bytes(8, "big")).hexdigest()[:16]
        style = styles[n % 4]
        job = Job(job_id=job_id, index=n, request={
            "prompt": PROMPT.format(n=n), "seed": n, "size": "1024*1024",
            "loras": [{"path": "https://example.com/loras/ghibli.safetensors", "scale": 0.5}],
            "output_format": "webp", "enable_base64_output": False},
            axes={"style": style, "seed": n, "loras": "ghibli@0.5"}, replica=0,
            name=f"{job_id[:3]}/{job_id}")
        ledger.submitting(job)
        ledger.submitted(job_id, str(uuid.UUID(int=n * 0x9E3779B97F4A7C15 % (1 << 128), version=4)))
        ledger.generated(job_id, n)
        ledger.done(job_id, f"images/{job.name}.webp", 280_000 + n % 40_000,
                    hashlib.sha256(job_id.encode()).hexdigest(), 700 + n % 50,
                    derived=derived_digest(job))
    cpu = time.process_time() - cpu
    ledger.close()
    return cpu


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited
    from the parent across exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decode_floor(path: Path) -> float:
    """CPU seconds of the least any replay does: read the file in blocks, cut it into lines
    and decode each with orjson once (nothing checked, nothing kept)."""
    import orjson

    loads, cpu = orjson.loads, time.process_time()
    with open(path, "rb") as fh:
        carry = b""
        while block := fh.read(1 << 20):
            lines = (carry + block).split(b"\n")
            carry = lines.pop()
            for line in lines:
                loads(line)
    return time.process_time() - cpu


def measure(folder: str) -> None:
    """Child process: the decoding floor, then replay once; print JSON with seconds and memory
    (peak RSS: tracemalloc would slow replay down several times and distort the time)."""
    from batchgen.storage.ledger import Ledger

    base = peak_rss_mb()
    floor = decode_floor(Path(folder) / "ledger.jsonl")
    start, cpu = time.perf_counter(), time.process_time()
    ledger = Ledger.open(Path(folder), "bench")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    jobs = len(ledger.records)
    replay_rss = peak_rss_mb()
    # What a run's pass over the manifest then does to each recorded job: mark it seen (a
    # manifest streams its jobs; here the ids come from the ledger itself, one at a time).
    mark = getattr(ledger.records, "mark_seen", None)
    pass_cpu = time.process_time()
    for job_id in ledger.records:
        if mark is not None:
            mark(job_id)
        else:
            ledger.records[job_id].seen = True
    pass_cpu = time.process_time() - pass_cpu
    pass_rss = peak_rss_mb()
    compact_start = time.perf_counter()
    ledger.compact()
    compact_seconds = time.perf_counter() - compact_start
    ledger.close()
    rss = peak_rss_mb()
    print(json.dumps({"jobs": jobs, "seconds": seconds, "cpu": cpu, "baseline_mb": base,
                      "replay_rss_mb": replay_rss, "max_rss_mb": rss, "compact_seconds": compact_seconds,
                      "pass_cpu": pass_cpu, "pass_rss_mb": pass_rss,
                      "floor": floor}))


def status_child(folder: Path) -> dict:
    """``batchgen status FOLDER`` as its own process: wall and CPU time from the outside,
    peak RSS from the inside (printed on stderr as it exits)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
            " file=sys.stderr))\n"
            "from batchgen.cli import main\n"
            "sys.exit(main(['status', sys.argv[1]]))\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    hwm = [line for line in out.stderr.splitlines() if line.startswith("VmHWM")]
    if not hwm:
        raise SystemExit(f"status failed: {out.stderr[-500:]}")
    return {"seconds": seconds, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "max_rss_mb": int(hwm[0].split()[1]) / 1024}


def child(folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(folder)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help="replays per figure (medians)")
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            writes = {"without": write_ledger(folder, size, checkpoints=False)}
            shutil.rmtree(folder)
            folder.mkdir()
            writes["with"] = write_ledger(folder, size, worst=False)
            shutil.rmtree(folder)
            folder.mkdir()
            write_ledger(folder, size)
            mb = os.path.getsize(folder / "ledger.jsonl") / 2**20
            keep = Path(tmp + "-raw.jsonl")
            shutil.copy(folder / "ledger.jsonl", keep)
            raws = []  # each child replays, then compacts: the run's ledger is put back first
            statuses = []
            for _ in range(args.repeat):
                shutil.copy(keep, folder / "ledger.jsonl")
                statuses.append(status_child(folder))
                raws.append(child(folder))
            keep.unlink()
            compacted = [child(folder) for _ in range(args.repeat)]  # the compacted file
        raw = {k: median(r[k] for r in raws) for k in ("seconds", "cpu", "replay_rss_mb", "baseline_mb",
                                                        "compact_seconds", "floor", "pass_rss_mb")}
        comp = {k: median(r[k] for r in compacted) for k in ("seconds", "cpu", "replay_rss_mb", "floor",
                                                              "pass_cpu", "pass_rss_mb")}
        status = {k: median(r[k] for r in statuses) for k in ("seconds", "cpu", "max_rss_mb")}
        rows.append((size, mb, raw, comp, status, writes))
    # Medians of --repeat replays; CPU time (user+sys), since wall time on a shared machine
    # measures the neighbours too.
    # The floor: reading and decoding every line once, nothing else (decode_floor).
    print("| recorded jobs | killed run's ledger MB | bytes/job | decode floor CPU s | replay CPU s (wall) "
          "| µs/job | peak RSS MB (baseline) | compact s | compacted: floor CPU s | replay CPU s (wall) "
          "| µs/job | peak RSS MB | then every job marked seen: CPU s, peak RSS MB "
          "| status, whole process: CPU s (wall) | its peak RSS MB "
          "| writing the events: CPU s, with the run's compactions (without) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, mb, raw, comp, status, writes in rows:
        print(f"| {size:,} | {mb:.0f} | {mb * 2**20 / size:.0f} | {raw['floor']:.2f} "
              f"| {raw['cpu']:.2f} ({raw['seconds']:.2f}) | {raw['cpu'] / size * 1e6:.1f} "
              f"| {raw['replay_rss_mb']:.0f} ({raw['baseline_mb']:.0f}) | {raw['compact_seconds']:.2f} "
              f"| {comp['floor']:.2f} | {comp['cpu']:.2f} ({comp['seconds']:.2f}) "
              f"| {comp['cpu'] / size * 1e6:.1f} | {comp['replay_rss_mb']:.0f} "
              f"| {comp['pass_cpu']:.2f}, {comp['pass_rss_mb']:.0f} "
              f"| {status['cpu']:.2f} ({status['seconds']:.2f}) | {status['max_rss_mb']:.0f} "
              f"| {writes['with']:.2f} ({writes['without']:.2f}) |")


if __name__ == "__main__":
    main()
