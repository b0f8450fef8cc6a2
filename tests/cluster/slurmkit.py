"""What the ``slurm`` fixture (``tests/cluster/conftest.py``) hands a test."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Slurm:
    """A running cluster: its folder (state, logs) and the environment its clients need."""

    folder: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}


#: Job states after which an array task does nothing more.
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
          "BOOT_FAIL", "DEADLINE"}


def run_array(slurm: Slurm, args: list[str], env: dict[str, str] | None = None,
              timeout: float = 300.0) -> dict[str, tuple[str, str]]:
    """``sbatch ARGS`` (with ``--array=...``) and wait for every task of the array to end."""
    return wait_array(slurm, submit_array(slurm, args, env), timeout)


def submit_array(slurm: Slurm, args: list[str], env: dict[str, str] | None = None) -> str:
    """``sbatch ARGS`` (with ``--array=...``); the job id."""
    submitted = subprocess.run(["sbatch", "--parsable", *args], env={**slurm.env, **(env or {})},
                               capture_output=True, text=True, timeout=60)
    if submitted.returncode != 0:
        raise AssertionError(f"sbatch failed: {submitted.stderr}")
    return submitted.stdout.strip().split(";")[0]


def wait_array(slurm: Slurm, job: str, timeout: float = 300.0) -> dict[str, tuple[str, str]]:
    """Each task's (state, exit code) by its id, once every task of array ``job`` has ended.
    ``sbatch --wait`` would do the waiting, but it first looks after 2 s and then only every
    10 s; ``scontrol`` is asked every 0.1 s instead."""
    deadline = time.monotonic() + timeout
    while True:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job], env=slurm.env,
                               capture_output=True, text=True, timeout=60)
        tasks = {}
        for line in shown.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("ArrayTaskId", "").isdigit():
                tasks[fields["ArrayTaskId"]] = (fields.get("JobState", ""), fields.get("ExitCode", ""))
        if tasks and all(state in _ENDED for state, _ in tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"the array {job} did not end in {timeout:.0f} s: {shown.stdout}")
        time.sleep(0.1)  # real time: waiting for a real scheduler
