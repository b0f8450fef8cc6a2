"""A manifest against the batch folder it writes to: what is done, new or gone, and whose file
each job would write.

``plan`` and ``run`` pass every job of the manifest through ``FolderDiff.add`` in their one
validating pass, so nothing is expanded twice. No job may write over a file the ledger records
for another job (an edit that shifts ``{index}`` names would otherwise overwrite paid images):
those clashes are found here before anything is sent. Memory stays flat: 8 bytes per recorded
file for the lookup, and only the first few examples of anything are kept.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchgen.errors import FileClash
from batchgen.job import MASK64, Job, JobState
from batchgen.storage.derived import DERIVED_KEY, is_stale
from batchgen.storage.folder import image_path
from batchgen.storage.ledger import JobRecord, Ledger

__all__ = ["Clash", "FolderDiff", "Renamed"]

_KEEP_HITS = 1000


@dataclass(frozen=True, slots=True)
class Clash:
    """A manifest job (``job_id``, at ``index``) would write ``file``, recorded for ``owner``."""

    file: str
    job_id: str
    index: int
    owner: str
    owner_state: JobState
    owner_in_manifest: bool


@dataclass(frozen=True, slots=True)
class Renamed:
    """A done (or outstanding) job whose file keeps its old name after a filename edit."""

    job_id: str
    old: str
    new: str


@dataclass
class FolderDiff:
    """Counts of the manifest's jobs by what the ledger knows, and the files they would write.

    ``new`` counts jobs a run would submit (no record, pending, or caught mid-submit);
    ``done``, ``failed`` and ``at_provider`` the others; ``vanished`` recorded jobs the
    manifest no longer has. Call ``add`` for every job, then ``finish``.
    """

    ledger: Ledger
    file_of: Callable[[Job], str] = image_path
    sample: int = 3
    jobs: int = 0
    done: int = 0
    failed: int = 0
    at_provider: int = 0
    new: int = 0
    vanished: int = 0
    renamed: int = 0
    rederive: int = 0     # done jobs whose caption and sidecar fields a run rewrites (derived.py)
    unrecorded: int = 0   # ... of them, with no digest recorded: checked, rewritten if they differ
    renamed_sample: list[Renamed] = field(default_factory=list)
    clashes: list[Clash] = field(default_factory=list)
    clash_count: int = 0
    _index: array | None = field(default=None, repr=False)
    _hits: list[tuple[str, int, str]] = field(default_factory=list, repr=False)
    _more_hits: int = 0

    @property
    def blank(self) -> bool:
        """Nothing recorded: every job is new and no file is another's, so ``add`` would look
        nothing up, and a pass may ``count`` its jobs instead of showing each."""
        return not self.ledger.records

    def count(self, jobs: int) -> None:
        """``jobs`` jobs of the manifest, not shown one by one (only for a ``blank`` ledger)."""
        self.jobs += jobs

    def add(self, job: Job) -> None:
        """One job of the manifest (the plan's ``observe`` hook)."""
        self.jobs += 1
        rec = self.ledger.records.mark_seen(job.job_id)
        own = None
        if rec is not None:
            # a done job keeps its recorded file (the common case of a resumed batch, first)
            if rec.state is JobState.DONE:
                own = rec.file
                if is_stale(job, rec):
                    self.rederive += 1
                    self.unrecorded += rec.get(DERIVED_KEY) is None
            else:
                own = self._destined(job.job_id, rec)
        file = self.file_of(job)
        if own is not None:
            if own != file and own.lower() != file.lower():  # it keeps its recorded file
                self.renamed += 1
                if len(self.renamed_sample) < self.sample:
                    self.renamed_sample.append(Renamed(job.job_id, own, file))
            return
        if self._index is None:
            self._index = self._build_index()
        index = self._index
        if not index:
            return
        key = hash(file.lower()) & MASK64
        at = bisect_left(index, key)
        if at < len(index) and index[at] == key:
            if len(self._hits) < _KEEP_HITS:
                self._hits.append((job.job_id, job.index, file))
            else:
                self._more_hits += 1

    def finish(self) -> FolderDiff:
        """After the last ``add``: count the jobs by state (the batch's one count, from the
        records the pass marked) and name the clashes exactly."""
        from batchgen.storage.batch import count_jobs

        records = self.ledger.records
        counts = count_jobs(self.ledger, self.jobs, passed=True)
        self.done, self.failed, self.at_provider = counts.done, counts.failed, counts.at_provider
        self.new, self.vanished = counts.pending, counts.vanished
        if self._hits:
            wanted = {hash(file.lower()) & MASK64 for _, _, file in self._hits}
            owners: dict[str, tuple[str, JobRecord]] = {}
            for job_id, rec in records.items():
                destined = self._destined(job_id, rec)
                if destined is not None and hash(destined.lower()) & MASK64 in wanted:
                    owners[destined.lower()] = (job_id, rec)
            found = []
            for job_id, index, file in self._hits:
                owner = owners.get(file.lower())
                if owner is not None and owner[0] != job_id:
                    found.append(Clash(file, job_id, index, owner[0], owner[1].state, owner[1].seen))
            self.clash_count = len(found) + self._more_hits
            self.clashes = found[:self.sample]
        self._index = None
        self._hits = []
        return self

    def raise_for_clashes(self) -> None:
        """FileClash naming both jobs and the file, when any job would overwrite another's."""
        if not self.clash_count:
            return
        first = self.clashes[0]
        where = "in the manifest" if first.owner_in_manifest else "no longer in the manifest"
        raise FileClash(
            f"{self.clash_count} job(s) of the manifest would write over files the ledger "
            f"records for other jobs: job {first.job_id} (#{first.index}) would write "
            f"{first.file}, which belongs to job {first.owner} ({first.owner_state}, {where}). "
            f"Nothing was sent. Give filename a field that tells the jobs apart (such as "
            f"{{job_id}} or the axis you changed), or use another output folder.",
            folder=self.ledger.folder, clashes=self.clashes, count=self.clash_count)

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "new": self.new, "failed": self.failed,
                "at_provider": self.at_provider, "vanished": self.vanished,
                "renamed": self.renamed,
                "renamed_examples": [{"job_id": r.job_id, "file": r.old, "name_now": r.new}
                                     for r in self.renamed_sample],
                "clashes": self.clash_count}

    # -- files the ledger holds -----------------------------------------------------------

    def _destined(self, job_id: str, rec: JobRecord) -> str | None:
        """The file a record has (done) or will write when its task is collected."""
        state = rec.state
        if state == JobState.DONE:
            return rec.file
        failure = rec.failure if state == JobState.FAILED else None
        if state.outstanding or (failure is not None and failure.follow and rec.task_id):
            job = rec.job(job_id)
            return self.file_of(job) if job is not None else None
        return None

    def _build_index(self) -> array:
        keys = array("Q")
        for job_id, rec in self.ledger.records.items():
            destined = self._destined(job_id, rec)
            if destined is not None:
                keys.append(hash(destined.lower()) & MASK64)
        return array("Q", sorted(keys))
