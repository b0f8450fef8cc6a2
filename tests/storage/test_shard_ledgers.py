"""One ledger per shard in one batch folder: read as one, locked apart, merged by time."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import UsageError
from batchgen.job import Job
from batchgen.manifest.shards import Shard
from batchgen.storage.identity import RunRecord, Target
from batchgen.storage.ledger import LEDGERS_DIR, Ledger, has_ledger, ledger_files
from batchgen.storage.status import batch_status

TARGET = Target("jiekou", "api.simulator", "z-image-turbo-lora", True)


def job(job_id: str) -> Job:
    return Job(job_id=job_id, index=0, request={"prompt": job_id, "size": "256*256"}, axes={}, replica=0,
               name=job_id)


def ids_of(shard: Shard, count: int = 40) -> list[str]:
    return [f"{n:016x}" for n in range(count) if shard.holds(f"{n:016x}")]


def finish(ledger: Ledger, job_id: str, task: str) -> None:
    ledger.submitting(job(job_id))
    ledger.submitted(job_id, task)
    ledger.generated(job_id, 1)
    image = ledger.folder / "images" / f"{job_id}.webp"  # status looks for each done image
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(b"x" * 10)
    ledger.done(job_id, f"images/{job_id}.webp", 10, "ab" * 32)


def test_each_shard_writes_its_own_ledger_and_a_reader_sees_them_as_one(tmp_path: Path) -> None:
    shards = [Shard(i, 3) for i in range(3)]
    open_ = [Ledger.open(tmp_path, "b", shard=s) for s in shards]  # all three at once
    try:
        for ledger, shard in zip(open_, shards, strict=True):
            for job_id in ids_of(shard):
                finish(ledger, job_id, f"t-{job_id}")
            ledger.record_run(RunRecord(at=1.0, mode="run", target=TARGET, planned=40, goal=40,
                                        shard=f"{shard.index}/3"))
    finally:
        for ledger in open_:
            ledger.close()
    assert not (tmp_path / "ledger.jsonl").exists()
    assert [p.name for p in ledger_files(tmp_path)] == [f"shard-{i}-of-3.jsonl" for i in range(3)]
    assert has_ledger(tmp_path)
    whole = Ledger.read(tmp_path)
    assert len(whole.records) == 40 and whole.counts()["done"] == 40
    assert whole.stats.tasks_created == 40
    report = batch_status(tmp_path)
    assert report.complete and report.done == 40 and report.tasks_created == 40 and report.ledgers == 3


def test_a_shard_keeps_only_its_jobs_and_counts_the_others_apart(tmp_path: Path) -> None:
    with _whole(tmp_path) as whole:
        for n in range(40):
            finish(whole, f"{n:016x}", f"t{n}")
    shard = Shard(1, 4)
    ledger = Ledger.open(tmp_path, "b", shard=shard)
    try:
        assert set(ledger.records) == set(ids_of(shard))
        assert ledger.stats.tasks_created == 0 and ledger.others.tasks_created == 40
        assert ledger.path == tmp_path / LEDGERS_DIR / "shard-1-of-4.jsonl"
    finally:
        ledger.close()


class _whole:
    def __init__(self, folder: Path) -> None:
        self.ledger = Ledger.open(folder, "b")

    def __enter__(self) -> Ledger:
        return self.ledger

    def __exit__(self, *exc) -> None:
        self.ledger.close()


def test_the_later_record_wins_even_when_the_clock_of_its_writer_is_behind(tmp_path: Path) -> None:
    shard = Shard(0, 2)
    job_id = ids_of(shard)[0]
    ahead = Ledger.open(tmp_path, "b", wall=lambda: 5_000.0, shard=shard)
    ahead.submitting(job(job_id))
    ahead.submitted(job_id, "task-1")  # a shard's run on a machine whose clock is ahead
    ahead.close()
    behind = Ledger.open(tmp_path, "b", wall=lambda: 1_000.0)  # the whole batch, clock behind
    try:
        assert behind.get(job_id).task_id == "task-1"       # it knows the shard's task
        behind.generated(job_id, 7)
        behind.done(job_id, "images/x.webp", 10, "cd" * 32)
        assert behind.get(job_id).at > 5_000.0               # never behind what it took over
    finally:
        behind.close()
    merged = Ledger.read(tmp_path)
    assert merged.get(job_id).state == "done" and merged.get(job_id).file == "images/x.webp"
    again = Ledger.open(tmp_path, "b", wall=lambda: 2_000.0, shard=shard)  # the shard again
    try:
        assert again.get(job_id).state == "done"
        again.compact()  # its copy of the record keeps its time: it still replays as done
    finally:
        again.close()
    assert Ledger.read(tmp_path).get(job_id).state == "done"


def test_locks_shards_side_by_side_never_the_same_shard_twice_or_the_whole_batch(tmp_path: Path) -> None:
    first = Ledger.open(tmp_path, "b", shard=Shard(0, 2))
    second = Ledger.open(tmp_path, "b", shard=Shard(1, 2))  # another shard: fine
    try:
        with pytest.raises(UsageError, match=r"shard 0/2 of this batch is already running"):
            Ledger.open(tmp_path, "b", shard=Shard(0, 2))
        with pytest.raises(UsageError, match=r"shards of this batch are running .*0/2.*1/2"):
            Ledger.open(tmp_path, "b")
        with pytest.raises(UsageError, match=r"must all split the batch the same way"):
            Ledger.open(tmp_path, "b", shard=Shard(2, 3))
        assert not (tmp_path / LEDGERS_DIR / "shard-2-of-3.jsonl").exists()
        report = batch_status(tmp_path)
        assert report.running is True and set(report.shards_running) == {"0/2", "1/2"}
    finally:
        first.close()
        second.close()
    whole = Ledger.open(tmp_path, "b")  # every shard stopped: the whole batch may run
    try:
        with pytest.raises(UsageError, match=r"running the whole batch"):
            Ledger.open(tmp_path, "b", shard=Shard(0, 2))
    finally:
        whole.close()
    assert batch_status(tmp_path).running is False


def test_membership_changes_are_written_as_whole_records_at_a_new_time(tmp_path: Path) -> None:
    shard = Shard(0, 2)
    job_id = ids_of(shard)[0]
    with _whole(tmp_path) as whole:
        finish(whole, job_id, "t")
    ledger = Ledger.open(tmp_path, "b", shard=shard)
    try:
        ledger.record_membership()  # nothing was seen: the job left the manifest
    finally:
        ledger.close()
    rec = Ledger.read(tmp_path).get(job_id)
    assert rec.gone and rec.state == "done" and rec.file == f"images/{job_id}.webp"
