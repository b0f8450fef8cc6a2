"""A real Slurm runs a job array, and --shard auto reads each array task's shard inside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.slurmkit import Slurm, run_array, submit_array, wait_array

#: Each array task records what Slurm set and the shard batchgen reads from it.
TASK = f"""#!/bin/sh
exec {sys.executable} - <<'PY'
import json, os
from batchgen.manifest.shards import parse_shard
shard = parse_shard("auto")
record = {{"task": os.environ["SLURM_ARRAY_TASK_ID"], "shard": str(shard), "source": str(shard.source)}}
with open(os.path.join(os.environ["OUT"], "task-" + record["task"] + ".json"), "w") as fh:
    json.dump(record, fh)
PY
"""


def submit_task_array(slurm: Slurm, folder: Path, array: str) -> str:
    folder.mkdir()
    script = folder / "task.sh"
    script.write_text(TASK)
    return submit_array(slurm, [f"--array={array}", f"--chdir={folder}",
                                f"--output={folder}/slurm-%A_%a.out", str(script)], env={"OUT": str(folder)})


def records(folder: Path) -> list[dict[str, str]]:
    return sorted((json.loads(p.read_text()) for p in folder.glob("task-*.json")),
                  key=lambda r: int(r["task"]))


@pytest.mark.slow
@pytest.mark.waits
def test_an_sbatch_array_gives_each_task_its_shard(slurm: Slurm, tmp_path: Path) -> None:
    plain, stepped = tmp_path / "plain", tmp_path / "stepped"
    jobs = [submit_task_array(slurm, plain, "0-2"), submit_task_array(slurm, stepped, "3-9:3")]
    for job, ids in zip(jobs, ("012", "369"), strict=True):
        tasks = wait_array(slurm, job)
        assert tasks == {i: ("COMPLETED", "0:0") for i in ids}, tasks

    assert records(plain) == [{"task": str(i), "shard": f"{i}/3", "source": "Slurm"} for i in range(3)]
    assert records(stepped) == [{"task": str(t), "shard": f"{i}/3", "source": "Slurm"}
                                for i, t in enumerate((3, 6, 9))]  # MIN and STEP normalised


SHARDED_RUN = """#!/bin/sh
exec {python} -m batchgen run {manifest} --base-url {base_url} --output {out} --shard auto --quiet
"""


@pytest.mark.slow
@pytest.mark.waits
def test_an_sbatch_array_of_shard_runs_finishes_the_batch_with_one_task_per_job(
        slurm: Slurm, tmp_path: Path) -> None:
    import os
    import signal

    from batchgen.storage.ledger import Ledger
    from batchgen.storage.status import batch_status
    from faultkit import manifest_text, write_manifest

    jobs = 30
    manifest = write_manifest(tmp_path, manifest_text("array", jobs, fmt="webp", concurrency=6))
    out = tmp_path / "out"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "simulate", "--port", "0", "--task-seconds", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        words = simulator.stdout.readline().split()
        assert words[:3] == ["batchgen", "simulator:", "API"], words
        script = tmp_path / "shard.sh"
        script.write_text(SHARDED_RUN.format(python=sys.executable, manifest=manifest,
                                             base_url=words[3], out=out))
        tasks = run_array(slurm, ["--array=0-2", f"--chdir={tmp_path}",
                                  f"--output={tmp_path}/slurm-%A_%a.out", str(script)],
                          env={"JIEKOU_API_KEY": "sk-slurm-test"})
        logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("slurm-*.out")))
        assert tasks == {i: ("COMPLETED", "0:0") for i in "012"}, f"{tasks}\n{logs}"
    finally:
        simulator.send_signal(signal.SIGINT)
        stdout, _ = simulator.communicate(timeout=30)
    assert f"{jobs} task(s) created" in stdout                   # the provider's own count
    assert sorted(p.name for p in (out / "ledgers").glob("*.jsonl")) == [
        f"shard-{i}-of-3.jsonl" for i in range(3)]             # each task ran its own shard
    report = batch_status(out)
    assert report.complete and report.done == jobs and report.tasks_created == jobs
    assert len({rec.task_id for rec in Ledger.read(out).records.values()}) == jobs
