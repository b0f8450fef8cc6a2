"""The group commit: files written and fsynced by its worker, then recorded done; a write that
fails part-way records what was made durable before it and nothing after; a full queue waits."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batchgen.engine.clock import LoopClock
from batchgen.engine.commit import Committer, Saved
from batchgen.engine.stats import RunStats
from batchgen.errors import OutputError
from batchgen.job import JobState
from batchgen.storage.folder import BatchFolder
from batchgen.storage.ledger import Ledger
from batchgen.storage.sidecar import ImageInfo, ProviderInfo, Sidecar
from enginekit import jobs
from vclock import VIRTUAL_TIME

pytestmark = pytest.mark.anyio


def saved(job, data: bytes = b"image-bytes") -> Saved:
    side = Sidecar(batchgen_version="0", batch="b", job_id=job.job_id, index=job.index, replica=0,
                   provider=ProviderInfo("simulator", "127.0.0.1", "m"), task_id=f"t{job.index}",
                   request=job.request, axes=job.axes, seed=None, caption=None,
                   image=ImageInfo("png", 1, 1, requested="256*256"))
    return Saved(job, data, side)


def parts(tmp_path: Path, count: int):
    clock = LoopClock()
    ledger = Ledger.open(tmp_path / "out", "b", wall=clock.wall)
    folder = BatchFolder(tmp_path / "out")
    folder.prepare()
    todo = jobs(count)
    for n, job in enumerate(todo):
        ledger.submitting(job)
        ledger.submitted(job.job_id, f"t{n}")
        ledger.generated(job.job_id, n)
    return clock, ledger, folder, todo


@VIRTUAL_TIME
async def test_saves_are_written_by_the_worker_and_recorded_done_after_their_sync(tmp_path: Path) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 5)
    stats = RunStats()
    committer = Committer(ledger, folder, stats, clock, interval=0.1)
    for job in todo:
        await committer.add(saved(job))
    # Queued, not written: the event loop did no file work, and nothing is done yet.
    assert not any((folder.root / f"images/{job.name}.png").exists() for job in todo)
    assert all(ledger.get(job.job_id).state == JobState.GENERATED for job in todo)
    committer.tick()   # the group goes to the worker
    committer.close()  # wait for it and record
    for job in todo:
        rec = ledger.get(job.job_id)
        assert rec.state == JobState.DONE and (folder.root / rec.file).read_bytes() == b"image-bytes"
    assert stats.done == 5 and stats.syncs == 1
    ledger.close()


@VIRTUAL_TIME
async def test_a_write_failing_part_way_records_what_came_before_and_writes_nothing_after(
        tmp_path: Path) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 4)
    (folder.images / f"{todo[1].name}.json").mkdir()   # the second job's sidecar cannot be put
    errors: list[OutputError] = []
    stats = RunStats()
    committer = Committer(ledger, folder, stats, clock, on_error=errors.append)
    for job in todo[:3]:
        await committer.add(saved(job))
    committer.tick()
    committer.close()
    states = [ledger.get(job.job_id).state for job in todo]
    assert states == [JobState.DONE] + [JobState.GENERATED] * 3
    assert len(errors) == 1 and stats.done == 1
    assert not (folder.images / f"{todo[1].name}.png").exists()   # no image without its sidecar
    assert not (folder.images / f"{todo[2].name}.png").exists()   # nothing after the failure
    # The disk failed: later saves are not written either, and the error is not heard twice.
    await committer.add(saved(todo[3]))
    committer.tick()
    committer.close()
    assert ledger.get(todo[3].job_id).state == JobState.GENERATED and len(errors) == 1
    ledger.close()


@VIRTUAL_TIME
async def test_without_grouping_a_failed_save_raises_at_once(tmp_path: Path) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 1)
    (folder.images / f"{todo[0].name}.png").mkdir()
    committer = Committer(ledger, folder, RunStats(), clock, interval=0)
    with pytest.raises(OutputError):
        await committer.add(saved(todo[0]))
    assert ledger.get(todo[0].job_id).state == JobState.GENERATED
    ledger.close()


@VIRTUAL_TIME
async def test_a_queue_past_its_byte_cap_makes_the_next_save_wait(tmp_path: Path) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 3)
    committer = Committer(ledger, folder, RunStats(), clock, interval=0.1, max_bytes=10)
    added: list[float] = []

    async def add(job) -> None:
        await committer.add(saved(job, b"x" * 8))
        added.append(anyio.current_time())

    started = anyio.current_time()
    await add(todo[0])            # 8 bytes queued: under the cap
    await add(todo[1])            # 16 queued now: over it
    with anyio.move_on_after(1.0):
        await add(todo[2])        # waits: nothing drains the queue
    assert len(added) == 2
    committer.tick()
    committer.close()             # written, synced, recorded: the queue is empty again
    await add(todo[2])
    assert len(added) == 3 and added[0] - started < 0.01
    committer.close()
    assert all(ledger.get(job.job_id).state == JobState.DONE for job in todo)
    ledger.close()
