"""A real Slurm runs a job array, and --shard auto reads each array task's shard inside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.slurmkit import Slurm

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


def submit_array(slurm: Slurm, folder: Path, array: str) -> subprocess.Popen[str]:
    folder.mkdir()
    script = folder / "task.sh"
    script.write_text(TASK)
    return subprocess.Popen(
        ["sbatch", f"--array={array}", "--wait", "--quiet", f"--chdir={folder}",
         f"--output={folder}/slurm-%A_%a.out", str(script)],
        env={**slurm.env, "OUT": str(folder)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(folder: Path) -> list[dict[str, str]]:
    return sorted((json.loads(p.read_text()) for p in folder.glob("task-*.json")),
                  key=lambda r: int(r["task"]))


@pytest.mark.slow  # sbatch --wait checks on its job after 2 s, then every 10 s
def test_an_sbatch_array_gives_each_task_its_shard(slurm: Slurm, tmp_path: Path) -> None:
    plain, stepped = tmp_path / "plain", tmp_path / "stepped"
    jobs = [submit_array(slurm, plain, "0-2"), submit_array(slurm, stepped, "3-9:3")]
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, f"sbatch failed: {err}"

    assert records(plain) == [{"task": str(i), "shard": f"{i}/3", "source": "Slurm"} for i in range(3)]
    assert records(stepped) == [{"task": str(t), "shard": f"{i}/3", "source": "Slurm"}
                                for i, t in enumerate((3, 6, 9))]  # MIN and STEP normalised
