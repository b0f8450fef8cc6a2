"""The one public reader of a batch: every job of the manifest joined with its ledger record.

``run``, ``status`` and ``retry`` decide what to do from it, and export and the viewers read
what was paid for through it, so "which jobs are done, pending, failed or gone from the
manifest" is answered in one place. Streams: one job at a time, whatever the batch's size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.job import Job, JobState
from batchgen.storage.ledger import JobRecord, Ledger
from batchgen.storage.sidecar import Sidecar

if TYPE_CHECKING:
    from batchgen.manifest import Manifest
    from batchgen.storage.batch import JobCounts, OpenBatch
    from batchgen.storage.remote import StoreBatch

__all__ = ["BatchResults", "JobResult", "StoredResult", "join", "open_results", "recorded",
           "vanished"]


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
    ``vanished`` can tell afterwards which recorded jobs the manifest no longer has. A done
    job's record may be a read-only ``PackedRecord``: a change goes through the ledger."""
    mark = ledger.records.mark_seen
    for job in jobs:
        yield JobResult(job, mark(job.job_id))


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
@dataclass(frozen=True, slots=True)
class StoredResult:
    """A done job as the batch folder holds it: its id and ledger record (no manifest needed)."""

    job_id: str
    record: JobRecord

    @property
    def file(self) -> str:
        """The image's path relative to the batch folder."""
        return self.record.file or ""

    def sidecar_file(self) -> str:
        return str(Path(self.file).with_suffix(".json"))


@dataclass
class BatchResults:
    """One batch's results, opened as every command opens a batch (``storage/batch.py``).
    With a manifest, only the manifest's jobs count; without, the jobs the latest run's
    manifest still had (a job an edit dropped is not exported from the folder either).

    A batch read from an object store has ``store`` set: its files are read through it (by
    their path in the batch, as ``StoredResult.file``), and ``folder`` is only a name."""

    folder: Path
    ledger: Ledger
    manifest: Manifest | None = None
    store: StoreBatch | None = None
    opened: OpenBatch | None = field(default=None, repr=False)
    _counted: bool = field(default=False, repr=False)

    @property
    def source(self) -> str:
        """Where the batch is: its store URL, or its folder."""
        return self.store.url if self.store is not None else str(self.folder)

    @property
    def batch(self) -> str:
        if self.manifest is not None:
            return self.manifest.name
        return self.ledger.batch or self.folder.name

    def counts(self) -> Counter[JobState]:
        """Jobs by state (the batch's one count: ``storage/batch.py``); never-started jobs
        count as pending."""
        jobs = self._jobs()
        return Counter({JobState.DONE: jobs.done, JobState.FAILED: jobs.failed,
                        JobState.SUBMITTED: jobs.at_provider, JobState.PENDING: jobs.pending})

    def _jobs(self) -> JobCounts:
        from batchgen.storage.batch import count_jobs

        if self.opened is not None:
            jobs = self.opened.counts(check_files=False)
        elif self.manifest is not None:
            planned = sum(1 for _ in join(self.manifest.jobs(), self.ledger))
            jobs = count_jobs(self.ledger, planned, passed=True)
        else:
            jobs = count_jobs(self.ledger)
        self._counted = True
        return jobs

    def done(self) -> Iterator[StoredResult]:
        """Done jobs in ledger order (the order they were first submitted in), one at a time.

        Ledger order rather than manifest order: jobs finished by a later run come after the
        ones already there, so whatever is built from this stream in order (export shards)
        changes only at its end when a batch grows."""
        if self.manifest is not None and not self._counted:
            self._jobs()  # the join marks which records the manifest still has
        only_seen = self.manifest is not None
        for job_id, rec in self.ledger.records.items():
            if rec.state == JobState.DONE and rec.file and (rec.seen if only_seen else not rec.gone):
                yield StoredResult(job_id, rec)


def open_results(target: str | Path) -> BatchResults:
    """The results of the batch named by a manifest file, a batch folder, or an object-store
    URL such as ``s3://bucket/prefix`` (its ledger copies read, its files read from there);
    reads only."""
    from batchgen.storage.batch import open_batch

    return open_batch(target).results()
