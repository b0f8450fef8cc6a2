"""A run compacts its ledger as it goes (``Ledger.checkpoint``), so a crash leaves a ledger
that is mostly compacted: read at any moment, it must mean exactly what the ledger of the
same events without compactions means; an fsync from the commit worker's thread must never
meet the descriptor a compaction swaps; and a compaction that fails must cost nothing else."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.job import Failed, Failure, Job
from batchgen.storage.ledger import CHECKPOINT_LINES, Ledger
from replaykit import view

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
IDS = [f"{n:016x}" for n in range(5)] + ["job-a"]
STEP = st.tuples(st.sampled_from(IDS), st.sampled_from(["done", "failed", "submitted", "pending", "odd"]))


def clock():
    ticks = itertools.count(1)
    return lambda: 1_000.0 + next(ticks)


def write(ledger: Ledger, n: int, job_id: str, what: str) -> None:
    """One job's events, as a run writes them."""
    job = Job(job_id=job_id, index=n, request={"prompt": f"p{n}"}, axes={"n": n}, replica=0, name=job_id)
    ledger.submitting(job)
    task = str(uuid.UUID(int=n + 1)) if what != "odd" else f"task-{n}"
    ledger.submitted(job_id, task)
    if what in ("done", "odd"):
        ledger.generated(job_id, n)
        ledger.done(job_id, f"images/{job_id}.png", n, "ab" * 32, n,
                    size_got="8*8" if what == "odd" else None)
    elif what == "failed":
        ledger.failed(job_id, Failed(Failure.TIMEOUT, "late"), task_id=task)
    elif what == "pending":
        ledger.reset(job_id)


def meaning(folder: Path) -> dict:
    """What a replay of the folder leaves, less the count of lines (compaction changes it)."""
    got = view(Ledger.read(folder))
    got["stats"] = got["stats"][1:4]
    return got


@SETTINGS
@given(st.lists(STEP, min_size=1, max_size=16), st.integers(1, 12), st.data())
def test_a_ledger_read_at_any_moment_of_a_run_means_what_it_would_without_checkpoints(
        tmp_path: Path, steps: list[tuple[str, str]], every: int, data) -> None:
    crash = data.draw(st.integers(1, len(steps)), label="crash after step")
    folders = {name: tmp_path / name for name in ("plain", "checkpointed")}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    plain = Ledger.open(folders["plain"], "b", wall=clock())
    plain.checkpoint_lines = 10**9
    kept = Ledger.open(folders["checkpointed"], "b", wall=clock())
    kept.checkpoint_lines = every
    for n, (job_id, what) in enumerate(steps[:crash]):
        write(plain, n, job_id, what)
        write(kept, n, job_id, what)
    # killed here: what is on disk (the appends reached the OS) is all the next run has
    assert meaning(folders["checkpointed"]) == meaning(folders["plain"])
    plain.close()
    kept.close()


def test_a_long_run_leaves_a_ledger_compacted_but_for_its_last_lines(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b", wall=clock())
    ledger.checkpoint_lines = 100
    for n in range(1_000):
        write(ledger, n, f"{n:016x}", "done")
    lines = (tmp_path / "ledger.jsonl").read_bytes().splitlines()
    assert len(lines) <= 100 + 2 and ledger.stats.lines == len(lines)   # 4,000 appended
    again = Ledger.read(tmp_path)
    assert len(again.records) == 1_000 and again.counts()["done"] == 1_000
    assert again.stats.tasks_created == 1_000
    ledger.close()
    assert CHECKPOINT_LINES >= 1 << 16   # a run of a few thousand jobs is never compacted midway


def test_an_fsync_from_another_thread_never_meets_the_descriptor_a_checkpoint_swaps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit worker's fsync is held inside the call while a checkpoint runs on the loop:
    the checkpoint must wait for it rather than close the descriptor under it."""
    ledger = Ledger.open(tmp_path, "b", wall=clock())
    for n in range(3):
        write(ledger, n, f"{n:016x}", "done")
    real_fsync, entered, checkpointed = os.fsync, threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def held_fsync(fd: int) -> None:
        if threading.current_thread() is worker:
            entered.set()
            checkpointed.wait(0.3)   # a checkpoint that does not wait for the lock ends here
        real_fsync(fd)

    def sync() -> None:
        try:
            ledger.sync()
        except BaseException as exc:   # noqa: BLE001 - any error is the failure
            errors.append(exc)

    monkeypatch.setattr(os, "fsync", held_fsync)
    worker = threading.Thread(target=sync)
    worker.start()
    assert entered.wait(5)
    ledger.checkpoint()
    checkpointed.set()
    worker.join()
    assert errors == []
    assert ledger.stats.lines == 2   # compacted: the header and one block line
    write(ledger, 3, f"{3:016x}", "done")   # appends go to the new file
    ledger.close()
    assert Ledger.read(tmp_path).counts()["done"] == 4


def test_a_compaction_that_fails_leaves_the_ledger_as_it_was_and_the_run_going(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b", wall=clock())
    ledger.checkpoint_lines = 20
    blocker = tmp_path / "ledger.jsonl.tmp"
    blocker.mkdir()   # where the compacted file is written: it cannot be
    (blocker / "x").write_text("x")
    for n in range(30):
        write(ledger, n, f"{n:016x}", "done")
    assert ledger.stats.lines == 1 + 30 * 4   # never compacted, every line appended
    shutil.rmtree(blocker)
    for n in range(30, 40):
        write(ledger, n, f"{n:016x}", "done")
    assert ledger.stats.lines < 40   # the next due checkpoint went through
    ledger.close()
    assert Ledger.read(tmp_path).counts()["done"] == 40


def test_checkpoints_copy_the_blocks_no_job_changed_and_write_the_rest_anew(tmp_path: Path) -> None:
    """Thousands of jobs (several blocks), then rounds of changes scattered over them: after
    each round the checkpointed ledger means what the plain one does, and compacting the
    plain one gives the very bytes the checkpoints left (copied blocks and encoded ones)."""
    rng = random.Random(7)
    plain = Ledger.open(tmp_path / "plain", "b", wall=clock())
    plain.checkpoint_lines = 10**9
    kept = Ledger.open(tmp_path / "kept", "b", wall=clock())
    kept.checkpoint_lines = 400
    ids = [f"{n:016x}" for n in range(2_600)]
    for n, job_id in enumerate(ids):
        for ledger in (plain, kept):
            write(ledger, n, job_id, "done")
    for turn in range(6):
        for n in rng.sample(range(len(ids)), 40) + [len(ids) + turn]:
            job_id = ids[n] if n < len(ids) else f"new-{n}"
            what = rng.choice(["done", "failed", "pending", "odd", "again"])
            for ledger in (plain, kept):
                if what == "again":
                    ledger.follow_again(job_id, str(uuid.UUID(int=n + 99)))
                else:
                    write(ledger, n, job_id, what)
        kept.checkpoint()
        assert meaning(tmp_path / "kept") == meaning(tmp_path / "plain"), turn
    plain.compact()
    files = [tmp_path / name / "ledger.jsonl" for name in ("kept", "plain")]
    assert files[0].read_bytes() == files[1].read_bytes()
    plain.close()
    kept.close()


def test_a_file_put_in_the_ledgers_place_is_never_copied_from(tmp_path: Path) -> None:
    """Garbage of the very length, or a link to it, where the last compaction wrote the file:
    the next compaction encodes every block from memory again."""
    ledger = Ledger.open(tmp_path, "b", wall=clock())
    for n in range(2_100):
        write(ledger, n, f"{n:016x}", "done")
    ledger.checkpoint()
    path = tmp_path / "ledger.jsonl"
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"x" * path.stat().st_size)
    for planted in ("file", "link"):
        path.unlink()
        if planted == "file":
            shutil.copy(garbage, path)
        else:
            path.symlink_to(garbage)
        ledger.checkpoint()
        again = Ledger.read(tmp_path)
        assert again.counts()["done"] == 2_100 and again.stats.bad_lines == 0, planted
    ledger.close()
