"""One way to open a batch: where it lives, its ledger, its target, and one count of its jobs.

Every command starts here (``plan``, ``run``, ``collect``, ``retry``, ``status``, ``export``,
``grid``, ``view``), so "which batch is this?" and "how many of its jobs are done?" have one
answer each. A batch is named by a manifest (its folder is the manifest's ``output``, or the
``--output`` given: a folder or an object-store URL), by a batch folder, or by a store URL
(``s3://bucket/prefix``: its ledger copies fetched). ``BatchPlace`` is where it lives,
decided before anything is opened; ``OpenBatch`` adds the replayed ledger (read only: no lock,
nothing written) and ``count_jobs`` its jobs by state.

Where a batch lives: a manifest's relative ``output:`` and the default ``output/<name>`` are
resolved against the manifest's own folder (``manifest/loader.py``), so the same manifest finds
the same batch from any working directory; ``--output`` on the command line is relative to the
working directory, as any path typed there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any

import orjson

from batchgen.errors import UsageError
from batchgen.job import JobState
from batchgen.storage.identity import RunRecord, Target
from batchgen.storage.ledger import LEDGER_FILE, Ledger, has_ledger, ledger_files
from batchgen.storage.objectstore import is_store_url
from batchgen.storage.replay import BATCH_KEY

if TYPE_CHECKING:
    from batchgen.manifest import Manifest
    from batchgen.storage.remote import StoreBatch

__all__ = ["BatchPlace", "JobCounts", "OpenBatch", "batch_in", "count_jobs", "open_batch",
           "place_of"]


@dataclass(frozen=True, slots=True)
class JobCounts:
    """A batch's jobs by state: the one count every command shows.

    ``planned``: the manifest's jobs (given a folder alone, as the latest run recorded them;
    ``planned_known`` False for a ledger without a run record). ``pending``: planned jobs
    neither done, failed nor at the provider (never started, put back, or caught mid-submit;
    ``submitting`` of them). ``vanished``: recorded jobs the manifest no longer has (never
    counted in the others). ``missing``: done jobs whose image is not there (``files_checked``
    False: nobody looked).
    """

    planned: int
    done: int = 0
    failed: int = 0
    at_provider: int = 0
    submitting: int = 0
    pending: int = 0
    vanished: int = 0
    missing: int = 0
    planned_known: bool = True
    files_checked: bool = False

    @property
    def complete(self) -> bool:
        """Every planned job is done and (when looked at) every done job's image is there."""
        return (self.planned > 0 and self.planned_known and self.done >= self.planned
                and not self.missing)

    def to_json(self) -> dict[str, Any]:
        return {"planned": self.planned, "done": self.done, "failed": self.failed,
                "at_provider": self.at_provider, "pending": self.pending,
                "vanished": self.vanished, "missing": self.missing if self.files_checked else None}


def count_jobs(ledger: Ledger, planned: int | None = None, *, passed: bool = False,
               exists: Callable[[str], bool] | None = None) -> JobCounts:
    """Count a batch's jobs by state from its replayed ledger.

    ``passed``: a pass over the manifest has just marked the records it met (``seen``); the
    others vanished. Without one, the membership the latest run recorded decides (``gone``).
    ``planned`` None: the latest run's planned count (or, without a run record, the recorded
    jobs). ``exists``: asked once per done job's image file, to count the missing ones.
    """
    done = failed = at_provider = submitting = recorded = vanished = missing = 0
    for rec in ledger.records.values():
        if not (rec.seen if passed else not rec.gone):
            vanished += 1
            continue
        recorded += 1
        state = rec.state
        if state is JobState.DONE:
            done += 1
            if exists is not None:
                file = rec.file
                if not (file and exists(file)):
                    missing += 1
        elif state is JobState.FAILED:
            failed += 1
        elif state.outstanding:
            at_provider += 1
        elif state is JobState.SUBMITTING:
            submitting += 1
    known = True
    if planned is None:
        run = ledger.last_run
        planned, known = (run.planned, True) if run is not None else (recorded, False)
    pending = max(0, planned - done - failed - at_provider)
    return JobCounts(planned=planned, done=done, failed=failed, at_provider=at_provider,
                     submitting=submitting, pending=pending, vanished=vanished, missing=missing,
                     planned_known=known, files_checked=exists is not None)


@dataclass(frozen=True, slots=True)
class BatchPlace:
    """Where a batch lives, decided once from what a command was given.

    ``folder``: the local folder of its ledger (the batch folder; for an object-store output,
    the state folder a run keeps its ledger in). ``url``: the store URL when the images are in
    a store. ``manifest``: the manifest that names it, when one was given.
    """

    folder: Path
    url: str | None = None
    manifest: Manifest | None = None
    given_output: bool = False  # --output named it (not the manifest)

    @property
    def location(self) -> str:
        """Where the images are: the store URL, or the folder (absolute)."""
        return self.url or str(self.folder)

    @property
    def in_store(self) -> bool:
        return self.url is not None

    def elsewhere(self) -> Path | None:
        """Another folder that already holds this manifest's batch, when this place holds none
        yet: a run here would start a second batch and pay for every job again. Looked for
        cheaply (the first line of a ledger) in the manifest's own folder when ``--output``
        named another, and in ``output/<name>`` under the working directory (where the default
        output was before it followed the manifest)."""
        m = self.manifest
        if m is None or self.in_store or has_ledger(self.folder):
            return None
        candidates = [m.output] if self.given_output else []
        candidates.append(Path.cwd() / "output" / m.name)
        for folder in candidates:
            folder = Path(os.path.abspath(folder))
            if folder != self.folder and batch_in(folder) == m.name:
                return folder
        return None


def place_of(target: str | os.PathLike[str] | Manifest, *, output: str | os.PathLike[str] | None = None,
             state: str | os.PathLike[str] | None = None) -> BatchPlace:
    """Where the batch named by ``target`` (a manifest, its path, a batch folder or a store
    URL) lives, with ``--output`` and ``--state`` as given. Reads the manifest if named by
    path; opens nothing else."""
    from batchgen.manifest import Manifest

    manifest: Manifest | None = target if isinstance(target, Manifest) else None
    text = os.fspath(target) if manifest is None else None
    if text is not None and is_store_url(text):
        _only_with_manifest(text, output, state)
        return BatchPlace(folder=_state(text, None), url=text.rstrip("/"))
    if manifest is None:
        path = Path(text)
        if path.is_dir():
            _only_with_manifest(text, output, state)
            return BatchPlace(folder=Path(os.path.abspath(path)))
        if not path.is_file():
            raise UsageError(f"{text} is neither a manifest file, a batch folder nor an object "
                             f"store URL (s3://bucket/prefix)")
        from batchgen.manifest import load_manifest

        manifest = load_manifest(path)
    if output is not None and is_store_url(os.fspath(output)):
        url = os.fspath(output).rstrip("/")
        return BatchPlace(folder=_state(url, state), url=url, manifest=manifest, given_output=True)
    if state is not None:
        raise UsageError("--state is for an object store output (--output s3://bucket/prefix); "
                         "a local batch folder keeps its ledger inside it")
    if output is not None:
        return BatchPlace(folder=Path(os.path.abspath(output)), manifest=manifest, given_output=True)
    return BatchPlace(folder=manifest.output, manifest=manifest)


def batch_in(folder: Path) -> str | None:
    """The batch name a folder's ledger was made for (its first line), or None: no ledger."""
    for path in ledger_files(folder):
        try:
            with open(path, "rb") as f:
                head = orjson.loads(f.readline() or b"null")
        except (OSError, ValueError):
            continue
        if isinstance(head, dict):
            name = head[BATCH_KEY] if BATCH_KEY in head else head.get("batch")
            if isinstance(name, str):
                return name
    return None


def _only_with_manifest(target: str, output: Any, state: Any) -> None:
    if output is not None or state is not None:
        flag = "--output" if output is not None else "--state"
        raise UsageError(f"{flag} goes with a manifest; {target} names the batch itself")


def _state(url: str, state: str | os.PathLike[str] | None) -> Path:
    from batchgen.storage.mirror import state_folder

    return Path(os.path.abspath(state)) if state is not None else state_folder(url)


@dataclass
class OpenBatch:
    """A batch opened to read: its place, its replayed ledger (every shard's; a store's
    fetched copies), the folder's target and latest run, and the one count of its jobs.

    ``ledger`` is None when nothing has run yet (a manifest whose folder has no ledger)."""

    place: BatchPlace
    ledger: Ledger | None
    store: StoreBatch | None = None
    _counts: JobCounts | None = field(default=None, repr=False)

    @property
    def manifest(self) -> Manifest | None:
        return self.place.manifest

    @property
    def folder(self) -> Path:
        return self.place.folder

    @property
    def location(self) -> str:
        return self.place.location

    @property
    def batch(self) -> str | None:
        if self.manifest is not None:
            return self.manifest.name
        return self.ledger.batch if self.ledger is not None else None

    @property
    def target(self) -> Target | None:
        """What made the batch's images (None: nothing recorded yet)."""
        return self.ledger.target if self.ledger is not None else None

    @property
    def last_run(self) -> RunRecord | None:
        return self.ledger.last_run if self.ledger is not None else None

    def image_exists(self, file: str) -> bool:
        """One stat of a done job's image (a store: its one listing of ``images/``)."""
        if self.store is not None:
            return self.store.size(file) is not None
        try:
            return S_ISREG(os.stat(f"{os.fspath(self.folder)}/{file}").st_mode)
        except (OSError, ValueError):
            return False

    def _files_here(self) -> bool:
        """The images can be looked for: in the folder, or in the store that was opened (a
        store output's state folder holds only the ledger; its images are in the store)."""
        if self.store is not None:
            return True
        run = self.last_run
        return not (run is not None and run.output is not None and is_store_url(run.output))

    def counts(self, *, check_files: bool = True) -> JobCounts:
        """The batch's jobs by state; with a manifest, joined job by job with the ledger (its
        never-started jobs pending); ``check_files`` looks for every done job's image."""
        if self._counts is None or (check_files and not self._counts.files_checked
                                    and self._files_here()):
            self._counts = self._count(check_files)
        return self._counts

    def _count(self, check_files: bool) -> JobCounts:
        manifest, ledger = self.manifest, self.ledger
        if ledger is None:
            planned = sum(1 for _ in manifest.jobs()) if manifest is not None else 0
            return JobCounts(planned=planned, pending=planned, files_checked=check_files)
        exists = self.image_exists if check_files and self._files_here() else None
        if manifest is None:
            return count_jobs(ledger, exists=exists)
        from batchgen.storage.results import join

        planned = sum(1 for _ in join(manifest.jobs(), ledger))
        return count_jobs(ledger, planned, passed=True, exists=exists)

    def status(self):
        """``batchgen status``: this batch's StatusReport."""
        from batchgen.storage.status import status_of

        return status_of(self)

    def results(self):
        """The reader export uses: this batch's done jobs (``storage/results.py``)."""
        from batchgen.storage.results import BatchResults

        name = self.folder if self.store is None else Path(self.location.rpartition("/")[2] or "batch")
        return BatchResults(name, self.ledger, self.manifest, store=self.store, opened=self)


def open_batch(target: str | os.PathLike[str] | Manifest, *, output: str | os.PathLike[str] | None = None,
               state: str | os.PathLike[str] | None = None, need_ledger: bool = True) -> OpenBatch:
    """Open the batch named by ``target`` to read (see ``place_of``).

    A store URL (as the target, or a manifest's ``--output``) has its ledger copies fetched
    and replayed; a folder its ledgers replayed. ``need_ledger`` False lets a manifest whose
    batch has not run yet open with no ledger (every job pending)."""
    place = place_of(target, output=output, state=state)
    if place.in_store:
        from batchgen.storage.remote import open_store_batch  # fsspec only for a store

        try:
            store = open_store_batch(place.url)
        except UsageError:
            if need_ledger or place.manifest is None:
                raise
            return OpenBatch(place, None)
        return OpenBatch(place, store.ledger, store)
    if not has_ledger(place.folder):
        other = place.elsewhere()
        if other is not None:  # not an empty batch: one run before the output followed the manifest
            raise UsageError(f"no batch in {place.folder}, but this manifest's batch is in "
                             f"{other}: give that folder instead of the manifest, or move it "
                             f"to {place.folder}")
        if place.manifest is not None and not need_ledger:
            return OpenBatch(place, None)
        if place.manifest is not None:
            raise UsageError(f"no batch in {place.folder}: nothing of {place.manifest.path} has "
                             f"run there yet (no {LEDGER_FILE})")
        raise UsageError(f"no batch in {place.folder}: there is no {LEDGER_FILE} there; give "
                         f"the manifest, the batch folder or its store URL")
    return OpenBatch(place, Ledger.read(place.folder))
