"""The ledger: replay, torn and garbage lines, locking, batch identity, compaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.errors import LedgerError, UsageError
from batchgen.job import Failed, Failure, Job
from batchgen.storage.ledger import LEDGER_FILE, Ledger


def job(n: int) -> Job:
    return Job(job_id=f"{n:016x}", index=n, request={"prompt": f"p{n}", "seed": n}, axes={"n": n},
               replica=0, name=f"img-{n}", caption=None)


def test_events_replay_to_the_same_records(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitting(job(1))
    ledger.submitted(job(1).job_id, "task-1", attempts=2, maybe_duplicated=1)
    ledger.submitting(job(2))
    ledger.submitted(job(2).job_id, "task-2")
    ledger.generated(job(2).job_id, 99)
    ledger.done(job(2).job_id, "images/img-2.png", 123, "ab")
    ledger.submitting(job(3))
    ledger.failed(job(3).job_id, Failed(Failure.REJECTED, "no", "ILLEGAL_PROMPT"))
    ledger.close()

    again = Ledger.open(tmp_path, "b")
    r1, r2, r3 = (again.get(job(n).job_id) for n in (1, 2, 3))
    assert (r1.state, r1.task_id) == ("submitted", "task-1")
    assert r1.job(job(1).job_id) == job(1)  # the job as sent can be rebuilt without the manifest
    assert (r2.state, r2.task_id, r2.file, r2.size) == ("done", "task-2", "images/img-2.png", 123)
    assert (r3.state, r3.get("reason"), r3.get("retryable")) == ("failed", "ILLEGAL_PROMPT: no", False)
    assert again.stats.tasks_created == 2 and again.stats.maybe_duplicated == 1
    assert [job_id for job_id, _ in again.outstanding()] == [job(1).job_id]
    again.close()


def test_torn_last_line_is_ignored_and_kept_apart_from_new_events(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitting(job(1))
    ledger.close()
    with open(tmp_path / LEDGER_FILE, "ab") as fh:
        fh.write(b'{"job":"0000000000000001","state":"subm')  # killed mid-write
    ledger = Ledger.open(tmp_path, "b")
    assert ledger.get(job(1).job_id).state == "submitting"
    assert ledger.stats.bad_lines == 1
    ledger.submitted(job(1).job_id, "task-1")
    ledger.close()
    ledger = Ledger.read(tmp_path)
    assert ledger.get(job(1).job_id).task_id == "task-1"


def test_garbage_lines_anywhere_are_skipped_and_counted(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitting(job(1))
    ledger.close()
    with open(tmp_path / LEDGER_FILE, "ab") as fh:
        fh.write(b"\x00\xff garbage\n[1,2]\n{\"job\": 5, \"state\": \"done\"}\n{\"job\":\"x\",\"state\":\"weird\"}\n")
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitted(job(1).job_id, "t")
    assert ledger.stats.bad_lines == 4 and set(ledger.records) == {job(1).job_id}
    ledger.close()


def test_a_ledger_of_another_batch_is_refused(tmp_path: Path) -> None:
    Ledger.open(tmp_path, "castle").close()
    with pytest.raises(LedgerError, match="belongs to batch 'castle'"):
        Ledger.open(tmp_path, "dataset")


def test_one_writer_at_a_time_but_anyone_may_read(tmp_path: Path) -> None:
    first = Ledger.open(tmp_path, "b")
    first.submitting(job(1))
    with pytest.raises(UsageError, match="already running"):
        Ledger.open(tmp_path, "b")
    assert Ledger.read(tmp_path).get(job(1).job_id).state == "submitting"
    first.close()
    Ledger.open(tmp_path, "b").close()  # the lock went with the first writer


def test_compaction_keeps_every_record_and_the_counts(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    for n in range(50):
        ledger.submitting(job(n))
        ledger.submitted(job(n).job_id, f"task-{n}", maybe_duplicated=int(n == 3))
        if n % 2:
            ledger.done(job(n).job_id, f"images/img-{n}.png", n, "x")
        elif n % 5 == 0:
            ledger.failed(job(n).job_id, Failed(Failure.TASK_FAILED, "boom"), task_id=f"task-{n}")
    before = {k: (r.state, r.task_id, r.file, r.size, r.info) for k, r in ledger.records.items()}
    ledger.compact()
    ledger.submitting(job(99))
    ledger.close()
    lines = (tmp_path / LEDGER_FILE).read_text().splitlines()
    assert len(lines) == 1 + 1 + 1  # the header, one block line of the 50 jobs, the new event
    assert json.loads(lines[1])["job"] == list(before)
    again = Ledger.open(tmp_path, "b")
    after = {k: (r.state, r.task_id, r.file, r.size, r.info) for k, r in again.records.items()}
    assert after.pop(job(99).job_id)[0] == "submitting"
    assert after == before
    assert again.stats.tasks_created == 50 and again.stats.maybe_duplicated == 1
    assert json.loads(lines[0])["batch_name"] == "b"  # (not "batch": see replay.BATCH_KEY)
    again.close()


def test_reset_and_follow_again(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitting(job(1))
    ledger.submitted(job(1).job_id, "t1")
    ledger.failed(job(1).job_id, Failed(Failure.TIMEOUT, "slow"), task_id="t1")
    ledger.follow_again(job(1).job_id, "t1")
    rec = ledger.get(job(1).job_id)
    assert (rec.state, rec.task_id) == ("submitted", "t1") and rec.job(job(1).job_id) == job(1)
    ledger.reset(job(1).job_id)
    assert (rec.state, rec.task_id) == ("pending", None)
    assert ledger.stats.tasks_created == 1  # following again is not a new task
    ledger.close()


def test_compaction_keeps_every_field_of_a_done_job_sha256_included(tmp_path: Path) -> None:
    digest = "ab" * 32
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitting(job(1))
    ledger.submitted(job(1).job_id, "task-1")
    ledger.done(job(1).job_id, "images/img-1.png", 77, digest)
    ledger.compact()
    ledger.close()
    rec = Ledger.read(tmp_path).get(job(1).job_id)
    assert (rec.state, rec.task_id, rec.file, rec.size, rec.sha256_hex) == (
        "done", "task-1", "images/img-1.png", 77, digest)


def test_replay_does_not_depend_on_the_order_of_keys(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    for n in (1, 2, 3):
        ledger.submitting(job(n))
        ledger.submitted(job(n).job_id, f"task-{n}")
    ledger.generated(job(2).job_id, 5)
    ledger.done(job(3).job_id, "images/img-3.png", 9, "cd" * 32)
    ledger.failed(job(1).job_id, Failed(Failure.REJECTED, "no", "ILLEGAL_PROMPT"), task_id="task-1")
    ledger.close()
    path = tmp_path / LEDGER_FILE
    straight = Ledger.read(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("".join(json.dumps(dict(reversed(list(json.loads(line).items())))) + "\n"
                            for line in lines))
    reversed_ = Ledger.read(tmp_path)
    def view(ledger: Ledger) -> dict:
        return {k: (r.state, r.task_id, r.file, r.size, r.sha256, r.info) for k, r in ledger.records.items()}
    assert view(reversed_) == view(straight) and reversed_.stats.bad_lines == 0
    assert reversed_.get(job(1).job_id).failure is Failure.REJECTED
    assert reversed_.get(job(1).job_id).label == "ILLEGAL_PROMPT"
    assert reversed_.get(job(2).job_id).state == "generated"


def test_a_replay_comes_in_steps_and_stopping_it_early_releases_the_folder(tmp_path: Path) -> None:
    from batchgen.storage.ledger import REPLAY_STEP

    ledger = Ledger.open(tmp_path, "steps")
    for n in range(REPLAY_STEP + 10):
        ledger.reset(f"{n:016x}")
    ledger.close()
    steps = Ledger.opening(tmp_path, "steps")
    assert next(steps) == REPLAY_STEP  # a caller on an event loop gets control back here
    steps.close()  # a Ctrl-C at that moment: the lock must not stay taken
    again = Ledger.open(tmp_path, "steps")
    assert len(again.records) == REPLAY_STEP + 10
    again.close()


def test_a_done_jobs_derived_digest_replays_and_compacts_as_before(tmp_path: Path) -> None:
    """The digest a done record keeps (held as its bare text in memory) reads back the same
    from the run's lines, from a compacted ledger, and from a compacted line written before
    (``info: {"derived": ...}``), which compaction writes again in that form."""
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitting(job(1))
    ledger.submitted(job(1).job_id, "task-1")
    ledger.done(job(1).job_id, "images/img-1.png", 123, "ab" * 32, 50, derived="0123456789abcdef")
    ledger.submitting(job(2))
    ledger.submitted(job(2).job_id, "task-2")
    ledger.done(job(2).job_id, "images/img-2.png", 124, "cd" * 32, 51, size_got="512*512",
                derived="fedcba9876543210")
    ledger.close()
    with open(tmp_path / LEDGER_FILE, "a", encoding="utf-8") as fh:  # as compaction wrote it before
        fh.write(json.dumps({"job": f"{3:016x}", "state": "done", "compact": 1, "at": 5.0,
                             "task_id": "task-3", "file": "images/img-3.png", "bytes": 9,
                             "info": {"derived": "00000000000000ff"}}) + "\n")

    def seen(ledger: Ledger) -> dict[str, tuple[object, ...]]:
        return {k: (r.get("derived"), r.size_got, r.details()) for k, r in ledger.records.items()}

    again = Ledger.open(tmp_path, "b")
    want = {f"{1:016x}": ("0123456789abcdef", None, {"derived": "0123456789abcdef"}),
            f"{2:016x}": ("fedcba9876543210", "512*512",
                          {"size_got": "512*512", "derived": "fedcba9876543210"}),
            f"{3:016x}": ("00000000000000ff", None, {"derived": "00000000000000ff"})}
    assert seen(again) == want
    again.compact()
    again.close()
    lines = [json.loads(line) for line in (tmp_path / LEDGER_FILE).read_text().splitlines()[1:]]
    # one block line; a digest alone is written as its text, other rarer fields as they are
    assert [line["info"] for line in lines] == [["0123456789abcdef",
                                                 {"size_got": "512*512", "derived": "fedcba9876543210"},
                                                 "00000000000000ff"]]
    third = Ledger.open(tmp_path, "b")
    assert seen(third) == want
    third.close()
