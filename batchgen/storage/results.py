"""The one public reader of a batch: every job of the manifest joined with its ledger record.

``run``, ``status`` and ``retry`` decide what to do from it, and export and the viewers read
what was paid for through it, so "which jobs are done, pending, failed or gone from the
manifest" is answered in one place. Streams: one job at a time, whatever the batch's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from batchgen.job import Job, JobState
from batchgen.storage.ledger import JobRecord, Ledger
from batchgen.storage.sidecar import Sidecar

__all__ = ["JobResult", "join", "recorded", "vanished"]


@dataclass(frozen=True, slots=True)
class JobResult:
    """One job of the manifest and what the ledger knows of it (``record`` None: never started)."""

    job: Job
    record: JobRecord | None
    #: the sidecar when the reader already read it (``recorded`` does, to rebuild the job)
    sidecar: Sidecar | None = None

    @property
    def state(self) -> JobState:
        return JobState.PENDING if self.record is None else self.record.state

    @property
    def file(self) -> str | None:
        """The image's path relative to the batch folder, once done."""
        return self.record.file if self.record is not None else None

    def sidecar_file(self) -> str | None:
        file = self.file
        return str(Path(file).with_suffix(".json")) if file else None

    def read_sidecar(self, folder: Path) -> Sidecar | None:
        """The sidecar as written, or None when it is missing or unreadable."""
        if self.sidecar is not None:
            return self.sidecar
        name = self.sidecar_file()
        if name is None:
            return None
        try:
            return Sidecar.decode((Path(folder) / name).read_bytes())
        except (OSError, ValueError):
            return None


def join(jobs: Iterable[Job], ledger: Ledger) -> Iterator[JobResult]:
    """Every job in manifest order with its record; marks the records it meets as seen, so
    ``vanished`` can tell afterwards which recorded jobs the manifest no longer has."""
    get = ledger.records.get
    for job in jobs:
        rec = get(job.job_id)
        if rec is not None:
            rec.seen = True
        yield JobResult(job, rec)


def vanished(ledger: Ledger) -> Iterator[tuple[str, JobRecord]]:
    """Recorded jobs not met by the last full ``join``: no longer in the manifest."""
    return ((job_id, rec) for job_id, rec in ledger.records.items() if not rec.seen)


def recorded(folder: Path, ledger: Ledger | None = None) -> Iterator[JobResult]:
    """Every job a batch folder's ledger knows, rebuilt without the manifest, in ledger order.

    A done job is rebuilt from its sidecar (kept on the result, so it is read once); a job that
    is out at the provider, was being submitted or failed, from the spec the ledger keeps for
    it. A record with neither (put back to pending, or done with its sidecar gone) cannot say
    what it was and is left out: count ``len(ledger.records)`` against what this yields.
    """
    folder = Path(folder)
    ledger = ledger if ledger is not None else Ledger.read(folder)
    for job_id, rec in ledger.records.items():
        job = rec.job(job_id)
        if job is not None:
            yield JobResult(job, rec)
            continue
        if rec.state != JobState.DONE or not rec.file:
            continue
        try:
            sidecar = Sidecar.decode((folder / rec.file).with_suffix(".json").read_bytes())
        except (OSError, ValueError):
            continue
        name = str(Path(rec.file).relative_to("images").with_suffix("")) if rec.file.startswith(
            "images/") else str(Path(rec.file).with_suffix(""))
        job = Job(job_id=job_id, index=sidecar.index, request=sidecar.request, axes=sidecar.axes,
                  replica=sidecar.replica, name=name, caption=sidecar.caption)
        yield JobResult(job, rec, sidecar)
