"""The manifest's jobs that still need work, decided against the ledger as they stream by.

The runner hands this stream to the scheduler: each job of the manifest is submitted, left
alone (done, failed, at the provider) or, when a done job's files are missing or broken,
followed once more to fetch them again. How much there is of each is the batch's one count
(``storage/batch.py`` ``count_jobs``).
"""

from __future__ import annotations

from collections.abc import Iterator

from batchgen.engine.derived import Rederive
from batchgen.engine.scheduler import Outstanding
from batchgen.engine.stats import RunStats
from batchgen.job import Job, JobState
from batchgen.manifest import Manifest
from batchgen.manifest.shards import Shard
from batchgen.storage.derived import is_stale
from batchgen.storage.ledger import Ledger
from batchgen.storage.results import join
from batchgen.storage.writer import Writer

__all__ = ["JobStream"]


class JobStream:
    """The manifest's jobs that still need work, decided against the ledger as they stream by.

    Yields a Job to submit, or an Outstanding to follow (a done job whose image or sidecar is
    missing or broken, fetched again from its task; or a task whose ledger entry lost its
    spec). Reads through the storage package's one join of manifest and ledger.
    """

    def __init__(self, manifest: Manifest, ledger: Ledger, writer: Writer, stats: RunStats,
                 submit: bool, shard: Shard | None = None) -> None:
        self.manifest = manifest
        self.ledger = ledger
        self.writer = writer
        self.stats = stats
        self.submit = submit
        self.shard = shard  # only this shard's jobs: the ledger holds only theirs
        self.repaired: set[str] = set()  # done jobs whose files are being fetched again
        #: done jobs whose derived files (caption, sidecar fields) the manifest now words
        #: otherwise are yielded as Rederive (the writer can rewrite them)
        self.rederive = hasattr(writer, "rewrite_derived")

    def __iter__(self) -> Iterator[Job | Outstanding | Rederive]:
        ledger = self.ledger
        jobs = self.manifest.submit_order()
        if self.shard is not None:
            jobs = self.shard.select(jobs)
        for result in join(jobs, ledger):
            job, rec = result.job, result.record
            if rec is None:
                if self.submit:
                    yield job
                continue
            state = rec.state
            if state == JobState.DONE:
                if rec.file and self.writer.has_result(rec.file, rec.size, rec.side):
                    if self.rederive and is_stale(job, rec):
                        yield Rederive(job, rec)  # its caption or sidecar fields changed
                    continue
                if (self.rederive and rec.file and rec.side
                        and self.writer.has_result(rec.file, rec.size)):
                    # The image is whole and the sidecar parses, at another size than recorded:
                    # a rewrite cut short before its ledger line. Written again, no download.
                    yield Rederive(job, rec)
                    continue
                self.stats.already_done -= 1
                job = self._at_recorded_name(job, rec.file)
                if rec.task_id:
                    self.repaired.add(job.job_id)
                    ledger.follow_again(job.job_id, rec.task_id, job=job)
                    yield Outstanding(job, rec.task_id, None, finished=True)
                elif self.submit:
                    ledger.reset(job.job_id)
                    yield job
            elif state in (JobState.PENDING, JobState.SUBMITTING):
                if self.submit:
                    yield job
            elif state.outstanding and rec.get("spec") is None and rec.task_id:
                yield Outstanding(job, rec.task_id, rec.get("submitted_at"))

    def _at_recorded_name(self, job: Job, file: str | None) -> Job:
        """The job as it was saved: a repaired file goes back where the ledger has it, even
        after a filename edit, so no file ever moves onto another job's name."""
        if not file or self.writer.image_file(job) == file:
            return job
        suffix = f".{job.extension}"
        if file.startswith("images/") and file.endswith(suffix):
            old = job._replace(name=file[len("images/"):-len(suffix)])
            if self.writer.image_file(old) == file:
                return old
        return job
