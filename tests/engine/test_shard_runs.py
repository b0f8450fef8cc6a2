"""Shards of one batch in one folder, in-process in virtual time: each job in exactly one
shard, one task per job between them, the account's limits shared, and a whole-batch run
that finishes whatever a shard left."""

from __future__ import annotations

from pathlib import Path

import orjson
from trio.testing import MockClock

from batchgen.engine.runner import share_of
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.shards import Shard, shard_of
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.ledger import LEDGERS_DIR, Ledger
from batchgen.storage.status import batch_status
from faultkit import check_folder, fast_options, manifest_text, run_batch, simulated, write_manifest


def simulator() -> Simulator:
    import anyio

    return Simulator(SimConfig(task_seconds=2.0, task_jitter=0.5), clock=anyio.current_time)


def shard_run(manifest: Path, out: Path, sim: Simulator, shard: Shard | None, **extra):
    options = fast_options(out, shard=shard, simulated=True, **simulated(sim), **extra)
    return run_batch(manifest, options, clock=MockClock(autojump_threshold=0))


def jobs_in(path: Path) -> set[str]:
    found = set()
    for raw in path.read_bytes().splitlines():
        event = orjson.loads(raw)
        if isinstance(event, dict) and isinstance(event.get("job"), str):
            found.add(event["job"])
    return found


def test_three_shards_make_one_task_per_job_between_them_and_status_merges_them(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, manifest_text("sh", 30, fmt="webp", concurrency=8))
    out = tmp_path / "out"
    sim = simulator()
    ids = [job.job_id for job in load_manifest(manifest).jobs()]
    for index in range(3):
        summary = shard_run(manifest, out, sim, Shard(index, 3))
        mine = [i for i in ids if shard_of(i, 3) == index]
        assert summary.planned == len(mine) and summary.done == len(mine) and summary.shard == f"{index}/3"
        assert summary.pacing.ceiling == share_of(8, Shard(index, 3))  # 3, 3, 2: the account's 8
        assert jobs_in(out / LEDGERS_DIR / f"shard-{index}-of-3.jsonl") == set(mine)
    assert sim.stats.tasks_created == 30                     # no job in two shards, none in none
    assert not (out / "ledger.jsonl").exists()
    report = batch_status(out)
    assert report.complete and report.planned == 30 and report.tasks_created == 30
    assert len(check_folder(out, fmt="webp").images) == 30
    again = shard_run(manifest, out, sim, None)              # the whole batch: nothing left
    assert again.done == 30 and sim.stats.tasks_created == 30


def test_an_edited_manifest_keeps_every_surviving_job_in_its_shard(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sim = simulator()
    manifest = write_manifest(tmp_path, manifest_text("sh", 20, fmt="webp"))
    for index in range(4):
        shard_run(manifest, out, sim, Shard(index, 4))
    before = {i: jobs_in(out / LEDGERS_DIR / f"shard-{i}-of-4.jsonl") for i in range(4)}
    # Jobs 1-10 are dropped, 11-20 kept, 21-40 new: the kept ones are done in their shard.
    edited = write_manifest(tmp_path, manifest_text("sh", 40, fmt="webp").replace(
        "from: 1, to: 40", "from: 11, to: 40"))
    kept = [job.job_id for job in load_manifest(edited).jobs() if any(job.job_id in b for b in before.values())]
    assert len(kept) == 10
    for index in range(4):
        summary = shard_run(edited, out, sim, Shard(index, 4))
        assert summary.already_done == sum(1 for i in kept if shard_of(i, 4) == index)
        assert {i for i in kept if shard_of(i, 4) == index} <= before[index]
    assert sim.stats.tasks_created == 20 + 20                # only the 20 new jobs were paid for
    report = batch_status(out)
    assert report.planned == 30 and report.done == 30 and report.complete and report.vanished == 10


def test_a_whole_batch_run_finishes_what_a_shard_left_without_paying_twice(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, manifest_text("sh", 24, fmt="webp"))
    out = tmp_path / "out"
    sim = simulator()
    shard_run(manifest, out, sim, Shard(0, 2))
    partial = shard_run(manifest, out, sim, Shard(1, 2), max_jobs=3)  # shard 1 did 3 of its jobs
    assert partial.done == 3 and partial.pending > 0
    status = batch_status(out)
    assert not status.complete and status.pending == 24 - status.done
    whole = shard_run(manifest, out, sim, None)
    assert whole.done == 24 and sim.stats.tasks_created == 24
    assert len(check_folder(out, fmt="webp").images) == 24
    assert Ledger.read(out).counts()["done"] == 24


def test_the_shares_of_an_account_limit_add_up_to_it() -> None:
    for total in (1, 7, 8, 32, 1000):
        for count in (1, 2, 3, 8, 64):
            shares = [share_of(total, Shard(i, count)) for i in range(count)]
            assert all(share >= 1 for share in shares)
            assert sum(shares) == max(total, count) if total < count else sum(shares) == total
