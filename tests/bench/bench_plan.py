"""Benchmark `plan` (load + one full expansion pass) at 10^4, 10^5 and 10^6 jobs.

Run by hand: `.venv/bin/python tests/bench/bench_plan.py [--sizes 10000,100000] [--variants axes]
[--repeat 3]`. Each case runs in fresh subprocesses (timed ones, one under tracemalloc) so
ru_maxrss and timings do not leak between cases; figures are CPU time (user+sys), medians of
``--repeat`` runs, the axes manifest's beside the floor taken in turn (``run-pass``: the same
manifest through the run's validating pass, engine/preflight.py; ``cli``: a whole
``batchgen plan`` process beside a whole process running the floor, start-up included);
prints a markdown table.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
from statistics import median
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

VARIANTS = {
    # pure axes: a prompt template over 10 styles x a seed range
    "axes": "10 styles x seed range",
    # a prompt file streamed (N/10 lines) x 10 seeds, with a file-name template and captions
    "txt-file": "prompts.txt x 10 seeds, filename+caption",
    # CSV rows (N/10, each setting a variable and the size) x 5 seeds x 2 LoRA sets
    "csv-rows": "rows.csv x 5 seeds x 2 LoRA sets",
    # the axes manifest through the run's validating pass (engine/preflight.py), a first run
    "run-pass": "10 styles x seed range, run's pass",
    # the axes manifest through `batchgen plan`, whole processes (the floor's too)
    "cli": "10 styles x seed range, `batchgen plan` process",
}


def write_manifest(folder: Path, jobs: int, variant: str) -> Path:
    """A manifest expanding to exactly ``jobs`` jobs, with its data files, in ``folder``."""
    path = folder / f"bench-{variant}.yaml"
    if variant == "axes":
        path.write_text(
            'prompt: "a {style} painting of a lighthouse, seed {seed}"\n'
            "expansion_limit: 10000000\n"
            "matrix:\n"
            "  style: [oil, ink, pastel, charcoal, fresco, gouache, pencil, tempera, acrylic, pixel]\n"
            f"  seed: {{from: 1, to: {jobs // 10}}}\n")
    elif variant == "txt-file":
        with (folder / "prompts.txt").open("w") as fh:
            for i in range(jobs // 10):
                fh.write(f"a photo of subject number {i} on a plain background\n")
        path.write_text(
            "expansion_limit: 10000000\n"
            'filename: "{index:07d}_{seed}"\n'
            "caption: true\n"
            "matrix:\n"
            "  prompt: {file: prompts.txt}\n"
            "  seed: {from: 1, to: 10}\n")
    else:
        with (folder / "rows.csv").open("w") as fh:
            fh.write("subject,size\n")
            for i in range(jobs // 10):
                fh.write(f"object {i},{'1024*1024' if i % 2 else '768*1344'}\n")
        path.write_text(
            'prompt: "{subject}, studio photo"\n'
            "expansion_limit: 10000000\n"
            "matrix:\n"
            "  rows: {file: rows.csv}\n"
            "  seed: [1, 2, 3, 4, 5]\n"
            "  loras:\n"
            "    - []\n"
            '    - [{path: "https://example.com/l/detail.safetensors", scale: 0.7}]\n')
    return path


def one(jobs: int, variant: str, trace: bool) -> dict[str, float]:
    """Load + plan one manifest in this process; returns measurements."""
    from batchgen.manifest.loader import load_manifest
    from batchgen.manifest.plan import plan_manifest

    with tempfile.TemporaryDirectory() as tmp:
        path = write_manifest(Path(tmp), jobs, variant)
        if trace:
            tracemalloc.start()
        start, cpu = time.perf_counter(), time.process_time()
        plan = plan_manifest(load_manifest(path))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        if plan.jobs != jobs:
            raise SystemExit(f"expected {jobs} jobs, planned {plan.jobs}")
    return {"seconds": seconds, "cpu": cpu, "peak_mb": peak / 2**20,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_pass(jobs: int, variant: str, trace: bool) -> dict[str, float]:
    """The run's validating pass (engine/preflight.py) of the axes manifest, for a first run:
    load, then the pass against a new, empty ledger."""
    from batchgen.engine.preflight import preflight
    from batchgen.manifest.loader import load_manifest
    from batchgen.steps import drain
    from batchgen.storage.ledger import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        path = write_manifest(Path(tmp), jobs, "axes")
        ledger = Ledger.open(Path(tmp) / "out", "bench")
        if trace:
            tracemalloc.start()
        start, cpu = time.perf_counter(), time.process_time()
        check = drain(preflight(load_manifest(path), ledger))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        ledger.close()
        if check.plan.jobs != jobs or check.diff is None or check.diff.jobs != jobs:
            raise SystemExit(f"expected {jobs} jobs, passed {check.plan.jobs}")
    return {"seconds": seconds, "cpu": cpu, "peak_mb": peak / 2**20,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


STYLES = ["oil", "ink", "pastel", "charcoal", "fresco", "gouache", "pencil", "tempera", "acrylic", "pixel"]


def floor(jobs: int, variant: str, trace: bool) -> dict[str, float]:
    """The least a planner must do per job of the "axes" manifest, in Python: build the
    request, its canonical JSON, sha256, and a set of ids (the floor plan is measured against)."""
    import hashlib

    import orjson

    if trace:
        tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    ids: set[bytes] = set()
    sha, dumps, opt = hashlib.sha256, orjson.dumps, orjson.OPT_SORT_KEYS
    for style in STYLES:
        for seed in range(1, jobs // 10 + 1):
            request = {"prompt": f"a {style} painting of a lighthouse, seed {seed}", "seed": seed,
                       "size": "1024*1024", "loras": [], "output_format": "png",
                       "enable_base64_output": False}
            ids.add(sha(dumps({"model": "z-image-turbo-lora", "request": request}, option=opt)).digest()[:8])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    assert len(ids) == jobs
    return {"seconds": seconds, "cpu": cpu, "peak_mb": peak / 2**20,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def whole_process(cmd: list[str], cwd: Path | None = None) -> dict[str, float]:
    """CPU time (user+sys) and peak RSS of one whole child process, start-up included."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "peak_mb": 0.0,
            "maxrss_mb": usage.ru_maxrss / 1024}


def cli_case(jobs: int, floor: bool) -> dict[str, float]:
    """``batchgen plan`` of the axes manifest, or the floor, each as a whole process."""
    if floor:
        return whole_process([sys.executable, __file__, "--one", str(jobs), "floor"])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_manifest(Path(tmp), jobs, "axes")
        return whole_process([sys.executable, "-m", "batchgen", "plan", str(path)], cwd=Path(tmp))


def run_case(jobs: int, variant: str, trace: bool) -> dict[str, float]:
    if variant in ("cli", "cli-floor"):
        return cli_case(jobs, floor=variant == "cli-floor")
    out = subprocess.run([sys.executable, __file__, "--one", str(jobs), variant]
                         + (["--trace"] if trace else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (medians)")
    parser.add_argument("--one", nargs=2, metavar=("JOBS", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        jobs, variant = int(args.one[0]), args.one[1]
        case = {"floor": floor, "run-pass": run_pass}.get(variant, one)
        print(json.dumps(case(jobs, variant, args.trace)))
        return
    print("| jobs | manifest | load+plan CPU s | µs/job | ru_maxrss MB | tracemalloc peak MB "
          "| floor CPU s | plan / floor |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for variant in args.variants.split(","):
        for jobs in (int(n) for n in args.sizes.split(",")):
            # Plan and floor alternate, and each figure is the median of --repeat runs of CPU
            # time (user+sys): on a shared machine wall time measures the neighbours too.
            timed, bases = [], []
            for _ in range(args.repeat):
                timed.append(run_case(jobs, variant, trace=False))
                if variant in ("axes", "run-pass"):  # the floor is written for the axes manifest
                    bases.append(run_case(jobs, "floor", trace=False))
                elif variant == "cli":
                    bases.append(run_case(jobs, "cli-floor", trace=False))
            traced = run_case(jobs, variant, trace=True) if variant != "cli" else {}
            cpu = median(t["cpu"] for t in timed)
            rss = max(t["maxrss_mb"] for t in timed)
            base = median(b["cpu"] for b in bases) if bases else None
            extra = f"{base:.2f} | {cpu / base:.2f}" if base else " | "
            peak = f"{traced['peak_mb']:.1f}" if variant != "cli" else "-"
            print(f"| {jobs:,} | {VARIANTS[variant]} | {cpu:.2f} | {cpu / jobs * 1e6:.1f} | "
                  f"{rss:.0f} | {peak} | {extra} |", flush=True)

if __name__ == "__main__":
    main()
