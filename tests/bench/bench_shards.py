"""Eight shard processes against one process: same jobs, same account limits, folder or store.

Run by hand: ``.venv/bin/python tests/bench/bench_shards.py [--jobs 1200] [--repeat 3]``.
The simulator runs in a process of its own and caps the account at ``--cap`` tasks in flight
(the manifest's ``concurrency`` says the same, so each of 8 shards takes an eighth of it).
Each layout runs ``--repeat`` times, the layouts in turn (A B C D A B C D ...), and the table
shows medians (ranges): wall time against the ideal (the sum of task times over the cap), tasks
the provider created per job, and the batchgen processes' CPU per image. With ``s3``, results
go to a SeaweedFS S3 server on loopback (``weed mini``) and the ledger to a state folder; its
CPU per image is the server's share of the cost.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parent)]

from benchkit import SimProcess, cpu_of, cpu_seconds, scratch_dir  # noqa: E402
from cluster.s3server import running_s3_server  # noqa: E402
from faultkit import manifest_text  # noqa: E402

from batchgen.simulator import SimConfig  # noqa: E402


def run_layout(manifest: Path, shards: int, output: str, base_url: str, env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "batchgen", "run", str(manifest), "--base-url", base_url,
               "--output", output, "--quiet"]
    started = time.perf_counter()
    if shards == 1:
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    else:
        procs = [subprocess.Popen([*command, "--shard", f"{i}/{shards}"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(shards)]
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"a run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1200)
    parser.add_argument("--cap", type=int, default=32, help="the account's tasks in flight")
    parser.add_argument("--task-seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()

    layouts = [(1, "folder"), (args.shards, "folder"), (1, "s3"), (args.shards, "s3")]
    results: dict[tuple[int, str], list[tuple[float, float, float, float]]] = {k: [] for k in layouts}
    config = SimConfig(task_seconds=args.task_seconds, task_jitter=0.1, max_in_flight=args.cap)
    ideal = args.jobs * args.task_seconds / args.cap
    with scratch_dir() as scratch, running_s3_server(Path(scratch) / "s3") as store:
        root = Path(scratch)
        manifest = root / "m.yaml"
        manifest.write_text(manifest_text("shards", args.jobs, fmt="webp", concurrency=args.cap))
        env = {**os.environ, **store.env, "JIEKOU_API_KEY": "sk-bench", "AWS_EC2_METADATA_DISABLED": "true",
               "XDG_STATE_HOME": str(root / "state")}
        for round_ in range(args.repeat):
            for shards, where in layouts:
                with SimProcess(config) as sim:
                    tag = uuid.uuid4().hex[:8]
                    output = store.url(f"bench-{tag}") if where == "s3" else str(root / f"out-{tag}")
                    cpu_before, weed_before = cpu_seconds(resource.RUSAGE_CHILDREN), cpu_of(store.pid)
                    wall = run_layout(manifest, shards, output, sim.api_base_url, env)
                    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before
                    weed = cpu_of(store.pid) - weed_before
                    created = sim.stats.tasks_created
                results[(shards, where)].append((wall, created / args.jobs, cpu * 1000 / args.jobs,
                                                 weed * 1000 / args.jobs if where == "s3" else 0.0))
                print(f"round {round_ + 1}: {shards} process(es), {where}: {wall:.1f} s", file=sys.stderr)

    def med(values: list[float], digits: int = 2) -> str:
        low, mid, high = min(values), statistics.median(values), max(values)
        return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"

    load = os.getloadavg()[0]
    print(f"\n{args.jobs} jobs of {args.task_seconds} s, the account capped at {args.cap} in flight "
          f"(ideal {ideal:.1f} s); medians of {args.repeat} (ranges); load average {load:.1f}\n")
    print("| processes | output | wall s | wall / ideal | tasks per job | batchgen CPU ms per image | store server CPU ms per image |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for (shards, where), rows in results.items():
        walls = [r[0] for r in rows]
        print(f"| {shards} | {where} | {med(walls, 1)} | {med([w / ideal for w in walls])} | "
              f"{med([r[1] for r in rows], 3)} | {med([r[2] for r in rows], 1)} | "
              f"{med([r[3] for r in rows], 1) if where == 's3' else '-'} |")


if __name__ == "__main__":
    main()
