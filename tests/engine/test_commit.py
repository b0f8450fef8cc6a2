"""The group commit: saved files fsynced in groups by its worker, then recorded done; a disk
that fails leaves its group's jobs generated (the next run fetches them again) and is heard once."""

from __future__ import annotations

import os
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


def sidecar(job) -> Sidecar:
    return Sidecar(batchgen_version="0", batch="b", job_id=job.job_id, index=job.index, replica=0,
                   provider=ProviderInfo("simulator", "127.0.0.1", "m"), task_id=f"t{job.index}",
                   request=job.request, axes=job.axes, seed=None, caption=None,
                   image=ImageInfo("png", 1, 1, requested="256*256"))


class FailingSync(BatchFolder):
    """The local folder on a disk whose fsync fails (an I/O error, a pulled USB disk)."""

    def sync(self) -> None:
        raise OutputError("cannot write in the batch folder: Input/output error")


def parts(tmp_path: Path, count: int, folder_class=BatchFolder):
    clock = LoopClock()
    ledger = Ledger.open(tmp_path / "out", "b", wall=clock.wall)
    folder = folder_class(tmp_path / "out")
    folder.prepare()
    todo = jobs(count)
    for n, job in enumerate(todo):
        ledger.submitting(job)
        ledger.submitted(job.job_id, f"t{n}")
        ledger.generated(job.job_id, n)
    return clock, ledger, folder, todo


@VIRTUAL_TIME
async def test_saves_are_recorded_done_only_after_the_group_sync(tmp_path: Path) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 5)
    stats = RunStats()
    committer = Committer(ledger, folder, stats, clock, interval=0.1)
    for job in todo:
        await committer.add(Saved(job.job_id, folder.save(job, b"image", sidecar(job))))
    assert all(ledger.get(job.job_id).state == JobState.GENERATED for job in todo)
    assert len(folder._unsynced) == 10   # image and sidecar of each, waiting for their fsync
    committer.tick()   # the group goes to the worker
    committer.close()  # wait for it and record
    assert all(ledger.get(job.job_id).state == JobState.DONE for job in todo)
    assert folder._unsynced == [] and stats.done == 5 and stats.syncs == 1
    ledger.close()


@VIRTUAL_TIME
async def test_a_failed_sync_leaves_the_group_generated_and_is_heard_once(tmp_path: Path) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 4, FailingSync)
    errors: list[OutputError] = []
    stats = RunStats()
    committer = Committer(ledger, folder, stats, clock, on_error=errors.append)
    for job in todo[:2]:
        await committer.add(Saved(job.job_id, folder.save(job, b"image", sidecar(job))))
    committer.tick()
    committer.close()
    for job in todo[2:]:
        await committer.add(Saved(job.job_id, folder.save(job, b"image", sidecar(job))))
    committer.tick()
    committer.close()
    assert all(ledger.get(job.job_id).state == JobState.GENERATED for job in todo)
    assert len(errors) == 1 and stats.done == 0
    ledger.close()


@VIRTUAL_TIME
async def test_without_grouping_a_failed_sync_raises_at_once(tmp_path: Path) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 1, FailingSync)
    committer = Committer(ledger, folder, RunStats(), clock, interval=0)
    with pytest.raises(OutputError):
        await committer.add(Saved(todo[0].job_id, folder.save(todo[0], b"image", sidecar(todo[0]))))
    assert ledger.get(todo[0].job_id).state == JobState.GENERATED
    ledger.close()


@VIRTUAL_TIME
async def test_an_idle_hour_fsyncs_the_ledger_only_after_appends_and_a_late_save_is_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, ledger, folder, todo = parts(tmp_path, 11)
    ledger.sync()
    ledger_file = ledger.path.stat().st_ino
    fsynced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        if os.fstat(fd).st_ino == ledger_file:
            fsynced.append(fd)   # called from the committer's worker thread
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    committer = Committer(ledger, folder, RunStats(), clock, interval=0.1, ledger_every=1.0)
    async with anyio.create_task_group() as group:
        group.start_soon(committer.run)
        await anyio.sleep(3600)
        assert fsynced == []            # an hour with nothing appended: not one fsync
        for job in todo[1:]:            # one line a minute for ten minutes
            ledger.reset(job.job_id)
            await anyio.sleep(60)
        job = todo[0]
        await committer.add(Saved(job.job_id, folder.save(job, b"image", sidecar(job))))
        await anyio.sleep(1)
        group.cancel_scope.cancel()
    committer.close()
    assert ledger.get(job.job_id).state == JobState.DONE
    assert 10 <= len(fsynced) <= 12     # about one per append, not one a second
    ledger.close()
