"""Runs whose output is an object store (a real S3 API server on loopback): the ledger on local
disk under a state folder and copied to the store; killed and started again; started again on
another machine (an empty state folder); shards on several machines sharing one prefix."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from batchgen.simulator import SimConfig, Simulator, running_simulator
from batchgen.storage.ledger import Ledger
from batchgen.storage.mirror import LedgerMirror, state_folder
from batchgen.storage.objectstore import ObjectStoreWriter
from batchgen.storage.status import batch_status
from batchgen.manifest.shards import Shard
from cluster.s3server import S3Server
from faultkit import fast_options, kill_when, manifest_text, run_batch, simulated, write_manifest

KEY = "sk-store-run-key-0123456789"


def objects(s3_server: S3Server, url: str) -> dict[str, bytes]:
    fs = s3_server.filesystem()
    root = url.removeprefix("s3://")
    return {path[len(root) + 1:]: fs.cat(path) for path in fs.find(root)}


def check_bucket(found: dict[str, bytes], jobs: int) -> None:
    images = {name: data for name, data in found.items() if name.endswith(".webp")}
    assert len(images) == jobs
    for name, data in images.items():
        side = json.loads(found[name.removesuffix(".webp") + ".json"])
        assert side["image"]["bytes"] == len(data)
        with Image.open(io.BytesIO(data)) as image:
            image.load()                                   # whole: a cut image fails here


@pytest.mark.slow
def test_a_store_batch_killed_and_run_again_then_run_on_another_machine(
        s3_server: S3Server, s3_url: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    jobs = 40
    manifest = write_manifest(tmp_path, manifest_text("to-store", jobs, fmt="webp", concurrency=8))
    env = {**os.environ, **s3_env, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1",
           "XDG_STATE_HOME": str(tmp_path / "machine-a")}
    state = state_folder(s3_url, env)
    kills = 0
    with running_simulator(SimConfig(task_seconds=0.2, task_jitter=0.05)) as sim:
        command = [sys.executable, "-m", "batchgen", "run", str(manifest), "--base-url",
                   sim.api_base_url, "--output", s3_url, "--quiet"]
        for target in random.Random(3).sample(range(6, 60), 2):   # two kill -9s mid-run
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            ledger = state / "ledger.jsonl"
            kills += kill_when(proc, lambda: ledger.exists() and ledger.read_bytes().count(b"\n") >= target)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"{jobs}/{jobs} images done in {s3_url}/images" in done.stdout
        created = sim.stats.tasks_created
        assert jobs <= created <= jobs + kills                 # a kill costs at most one task
        found = objects(s3_server, s3_url)
        check_bucket(found, jobs)
        copies = [name for name in found if name.startswith("ledger/ledger.jsonl/")]
        assert copies and all(found[name].endswith(b"\n") for name in copies)  # whole lines
        assert all(KEY.encode() not in body for body in found.values())
        # Another machine: no state folder yet. It fetches the store's copy and pays for nothing.
        other = {**env, "XDG_STATE_HOME": str(tmp_path / "machine-b")}
        again = subprocess.run(command, env=other, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert sim.stats.tasks_created == created
        assert f"{jobs}/{jobs} images done" in again.stdout and "(0 submitted" in again.stdout
    report = batch_status(state_folder(s3_url, other))
    assert report.complete and report.done == jobs


@pytest.mark.slow
def test_shards_on_machines_of_their_own_share_one_prefix_and_a_third_finishes(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    jobs = 24
    manifest = write_manifest(tmp_path, manifest_text("shared", jobs, fmt="webp"))
    sim = Simulator(SimConfig(task_seconds=0.05, task_jitter=0))

    def on(machine: str, shard: Shard | None, **extra):
        options = fast_options(tmp_path / machine, shard=shard, writer=ObjectStoreWriter(s3_url),
                               mirror=LedgerMirror(s3_url), location=s3_url, **simulated(sim),
                               **extra)
        return run_batch(manifest, options)

    first = on("a", Shard(0, 2))
    second = on("b", Shard(1, 2), max_jobs=2)                  # stops early: 2 of its jobs done
    assert first.done + second.done == first.planned + 2
    names = set(objects(s3_server, s3_url))
    assert {name.rsplit("/", 2)[0] for name in names if name.startswith("ledger/")} == {
        "ledger/ledgers/shard-0-of-2.jsonl", "ledger/ledgers/shard-1-of-2.jsonl"}
    third = on("c", None)                                      # the whole batch, a third machine
    assert third.done == jobs and sim.stats.tasks_created == jobs
    check_bucket(objects(s3_server, s3_url), jobs)
    merged = Ledger.read(tmp_path / "c")
    assert merged.counts()["done"] == jobs
    # Machine b runs its shard again: the store's copy of the whole-batch ledger tells it all.
    again = on("b", Shard(1, 2))
    assert again.done == again.planned and sim.stats.tasks_created == jobs


def test_plan_against_a_store_compares_with_its_ledger_copies(
        s3_server: S3Server, s3_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from batchgen.cli.main import main

    manifest = write_manifest(tmp_path, manifest_text("planned", 10, fmt="webp"))
    sim = Simulator(SimConfig(task_seconds=0.05, task_jitter=0))
    options = fast_options(tmp_path / "state", writer=ObjectStoreWriter(s3_url), max_jobs=4,
                           mirror=LedgerMirror(s3_url), location=s3_url, **simulated(sim))
    run_batch(manifest, options)
    assert main(["plan", str(manifest), "--output", s3_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["done"] == 4 and data["new"] == 6 and data["output"] == s3_url
    assert main(["plan", str(manifest), "--output", s3_url]) == 0
    assert f"output      {s3_url}" in capsys.readouterr().out
