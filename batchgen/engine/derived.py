"""Bring a done job's caption and sidecar fields in step with the manifest, without a task.

The job stream finds them (``Rederive``: a done job whose recorded digest is not the one the
manifest gives now, storage/derived.py); the scheduler hands each to ``Rederiver.run`` as it
streams by. A writer over the network is called in a worker thread. The new digest is recorded
in a done line, so a rerun has nothing left to do; a crash before it just does it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

from batchgen.job import Job
from batchgen.storage.derived import derived_digest
from batchgen.storage.ledger import JobRecord, Ledger
from batchgen.storage.writer import Writer

__all__ = ["Rederive", "Rederiver"]

log = logging.getLogger("batchgen.engine.derived")


@dataclass(frozen=True, slots=True)
class Rederive:
    """A done job whose derived files the manifest now words otherwise."""

    job: Job
    record: JobRecord


class Rederiver:
    """Rewrites derived files through the run's writer and records them in the ledger."""

    def __init__(self, writer: Writer, ledger: Ledger) -> None:
        self.writer = writer
        self.ledger = ledger
        self.rewritten = 0  # jobs whose caption or sidecar were rewritten this run

    async def run(self, item: Rederive) -> None:
        job, rec = item.job, item.record
        file = rec.file
        if not file:
            return
        rewrite = getattr(self.writer, "rewrite_derived")
        try:
            if getattr(self.writer, "remote", False):
                size, changed = await anyio.to_thread.run_sync(rewrite, job, file)
            else:
                size, changed = rewrite(job, file)
        except ValueError as exc:  # a sidecar that is not one: the next run fetches it again
            log.warning("job %s: sidecar beside %s not rewritten: %s", job.job_id, file, exc)
            return
        self.ledger.done(job.job_id, file, rec.size, rec.sha256_hex or "", size,
                         size_got=rec.size_got, derived=derived_digest(job))
        self.rewritten += changed
