"""N shard processes in parallel over loopback, killed with SIGKILL in the middle and started
again: between them, one task per job (a kill may cost the one task it was submitting)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from batchgen.manifest.loader import load_manifest
from batchgen.manifest.shards import shard_of
from batchgen.simulator import SimConfig, running_simulator
from batchgen.storage.ledger import LEDGERS_DIR, Ledger
from faultkit import check_folder, kill_when, manifest_text, write_manifest

KEY = "sk-shard-test-key-0123456789"
SHARDS = 3
JOBS = 60


def start(manifest: Path, out: Path, base_url: str, shard: str, *, capture: bool = True) -> subprocess.Popen:
    env = {**os.environ, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "batchgen", "run", str(manifest), "--base-url", base_url,
         "--output", str(out), "--shard", shard, "--quiet"],
        env=env, stdout=pipe, stderr=pipe, text=True)


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_shard_processes_killed_and_started_again_pay_once_per_job(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, manifest_text("live", JOBS, fmt="webp", concurrency=12))
    out = tmp_path / "out"
    ids = [job.job_id for job in load_manifest(manifest).jobs()]
    rng = random.Random(7)
    kills = 0
    config = SimConfig(task_seconds=0.2, task_jitter=0.05)
    with running_simulator(config) as sim:
        procs = {i: start(manifest, out, sim.api_base_url, f"{i}/{SHARDS}", capture=False)
                 for i in range(SHARDS)}
        for i, proc in procs.items():  # each killed once, at a random point of its progress
            ledger = out / LEDGERS_DIR / f"shard-{i}-of-{SHARDS}.jsonl"
            target = rng.randint(4, 30)
            kills += kill_when(proc, lambda: lines(ledger) >= target)
        again = {i: start(manifest, out, sim.api_base_url, f"{i}/{SHARDS}") for i in range(SHARDS)}
        for proc in again.values():
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            assert "Traceback" not in stderr
        prompts = Counter(task.recipe.prompt for task in sim.state.tasks.values())
    assert kills >= 1
    assert len(prompts) == JOBS                                   # none in none
    assert sum(prompts.values()) <= JOBS + kills                  # at most one extra per kill
    assert sum(1 for n in prompts.values() if n > 1) <= kills
    for i in range(SHARDS):                                       # none in two shards
        ledger = out / LEDGERS_DIR / f"shard-{i}-of-{SHARDS}.jsonl"
        seen = {json.loads(raw)["job"] for raw in ledger.read_text().splitlines()
                if '"job"' in raw}
        assert seen == {job_id for job_id in ids if shard_of(job_id, SHARDS) == i}
    report = check_folder(out, fmt="webp")
    assert len(report.images) == JOBS
    status = subprocess.run([sys.executable, "-m", "batchgen", "status", str(out), "--json"],
                            capture_output=True, text=True, timeout=60)
    data = json.loads(status.stdout)
    assert data["complete"] and data["done"] == JOBS and data["ledgers"] == SHARDS
    # A task created in the instant before a kill has no id on disk: counted by the provider only.
    assert JOBS <= data["tasks_created"] <= sum(prompts.values())
    assert Ledger.read(out).counts()["done"] == JOBS
