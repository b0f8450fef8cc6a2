"""The first pass of an export: every done job's sidecar read once, checked and flattened.

It learns the columns (names and types) and how many rows there are before anything is
written, and spills each row to one temporary JSON Lines file, so the writing pass reads one
file front to back instead of opening every sidecar again. Nothing is held per job: memory
stays flat from ten jobs to a million. A batch in an object store is scanned the same way,
its sidecars fetched a few hundred at a time and sizes taken from one listing.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from batchgen.export.files import clean_relative, read_no_follow
from batchgen.export.rows import FIXED, Columns, Where, flat_row
from batchgen.storage.results import BatchResults, StoredResult
from batchgen.storage.sidecar import Sidecar

if TYPE_CHECKING:
    from batchgen.storage.remote import StoreBatch

__all__ = ["Entry", "Item", "Omission", "Omitted", "Scan", "check_where", "scan"]

#: done jobs looked at together in a store: their sidecars are fetched at once
STORE_CHUNK = 256


class Omission(StrEnum):
    """Why a job recorded done is left out of the export (reported, never silent)."""

    NO_IMAGE = "no_image"        # missing, or not the size the ledger recorded
    NO_SIDECAR = "no_sidecar"    # missing or unreadable
    CHANGED = "changed"          # the bytes no longer hash to the recorded sha256
    UNREADABLE = "unreadable"    # no sha256 recorded, and the bytes do not decode as an image
    OUTSIDE = "outside"          # the recorded path is absolute, has .., or is a symlink


@dataclass(frozen=True, slots=True)
class Omitted:
    """One done job left out: why, which job, and the path of its file in the batch."""

    why: Omission
    job_id: str
    path: str


@dataclass(slots=True)
class Item:
    """One row on its way to a writer: where the image is, what it must hash to, the row."""

    key: str
    image: str          # absolute path of the image file (from a store: its path in the batch)
    path: str           # its path in the batch, as recorded (for the report)
    ext: str
    size: int
    sha256: str
    stamp: list[int]    # image and sidecar (size, mtime_ns; in a store: size, ETag or bytes
                        # digest): a change on disk or in the store changes the unit's digest
    caption: str | None
    row: dict[str, Any]
    sidecar: str        # the sidecar, compact JSON
    index: int = 0      # the job's place in the manifest's expansion (--dedupe keeps the first)


@dataclass(frozen=True, slots=True)
class Entry:
    """One spilled row, not parsed yet: where it is, its key and image size, its bytes."""

    offset: int
    key: str
    size: int
    line: bytes

    def item(self) -> Item:
        return Item(*orjson.loads(self.line))


#: distinct values kept per axis for the dataset card, at most
AXIS_VALUES = 50


@dataclass
class Provenance:
    """What the dataset card says about the exported rows: who made them, when, over what."""

    providers: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    first: str | None = None
    last: str | None = None
    axes: dict[str, Counter[str]] = field(default_factory=dict)
    more: set[str] = field(default_factory=set)   # axes with more than AXIS_VALUES values

    def learn(self, sidecar: Sidecar) -> None:
        p = sidecar.provider
        self.providers[(p.name, p.host, p.model)] += 1
        when = sidecar.timings.finished
        if isinstance(when, str):
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        for axis, value in sidecar.axes.items():
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            seen = self.axes.setdefault(axis, Counter())
            if text in seen or len(seen) < AXIS_VALUES:
                seen[text] += 1
            else:
                self.more.add(axis)


@dataclass
class Scan:
    """What the first pass learnt; ``entries()`` replays the rows from the spill file.

    A spilled line is ``key TAB size TAB json``: a later pass can cut rows into units and sort
    them by key without parsing a row it does not need yet.
    """

    columns: Columns
    spill: Path
    rows: int = 0
    bytes: int = 0
    filtered_out: int = 0
    omitted: list[Omitted] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    about: Provenance = field(default_factory=lambda: Provenance())

    def entries(self) -> Iterator[Entry]:
        offset = 0
        with open(self.spill, "rb") as fh:
            for raw in fh:
                key, size, line = raw.split(b"\t", 2)
                yield Entry(offset, key.decode(), int(size), line)
                offset += len(raw)

    def load(self, offsets: list[int]) -> Iterator[Item]:
        """The rows at these offsets of the spill file, in the order given."""
        with open(self.spill, "rb") as fh:
            for offset in offsets:
                fh.seek(offset)
                yield Item(*orjson.loads(fh.readline().split(b"\t", 2)[2]))

    def problem(self, kind: Omission, job_id: str, file: str) -> None:
        self.omitted.append(Omitted(kind, job_id, file))


def _stamp(path: Path) -> tuple[int, int] | None:
    """A regular file's (size, mtime_ns), not following a symlink; None otherwise."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


def scan(results: BatchResults, where: Where, spill: Path,
         progress: Callable[[int], None] | None = None) -> Scan:
    """Read every done job's sidecar once; keep the rows ``where`` accepts in ``spill``."""
    folder = results.folder.absolute()
    real = folder.resolve()
    columns = Columns()
    found = Scan(columns, spill)
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    with open(spill, "wb") as out:
        if results.store is not None:
            _scan_store(results, results.store, where, found, out, progress)
            return found
        for n, result in enumerate(results.done(), 1):
            if progress is not None and n % 1000 == 0:
                progress(n)
            _one(folder, real, result.file, result.record.size, result.record.sha256_hex,
                 result.job_id, found, where, out, dumps, newline)
    return found


def _outside(real: Path, image: Path) -> bool:
    """True when the image is a symlink, or a symlinked folder leads it out of the batch."""
    try:
        return image.is_symlink() or not image.parent.resolve().is_relative_to(real)
    except OSError:
        return True


def _one(folder: Path, real: Path, file: str, size: int, sha256: str | None, job_id: str,
         found: Scan, where: Where,
         out: BinaryIO, dumps: Callable[..., bytes], newline: int) -> None:
    if clean_relative(file) is None:
        found.problem(Omission.OUTSIDE, job_id, str(file))
        return
    image = folder / file
    if _outside(real, image):
        found.problem(Omission.OUTSIDE, job_id, file)
        return
    sidecar_path = image.with_suffix(".json")
    image_stamp = _stamp(image)
    if image_stamp is None or image_stamp[0] != size:
        found.problem(Omission.NO_IMAGE, job_id, file)
        return
    raw = read_no_follow(sidecar_path)
    try:
        sidecar = Sidecar.decode(raw) if raw is not None else None
    except ValueError:
        sidecar = None
    side_stamp = _stamp(sidecar_path)
    if sidecar is None or side_stamp is None:
        found.problem(Omission.NO_SIDECAR, job_id, str(sidecar_path.relative_to(folder)))
        return
    _keep(found, where, out, dumps, newline, job_id, str(image), file, image.suffix.lstrip("."), size,
          sha256, [*image_stamp, *side_stamp], sidecar)


def _keep(found: Scan, where: Where, out: BinaryIO, dumps: Callable[..., bytes], newline: int,
          job_id: str, image: str, file: str, ext: str, size: int, sha256: str | None,
          stamp: list[int],
          sidecar: Sidecar) -> None:
    """Flatten one good row, filter it, learn its columns and spill it."""
    row = flat_row(sidecar)
    row["job_id"] = job_id  # the ledger's id is the one the batch knows the job by
    found.keys.update(row)
    if where and not where.matches(row):
        found.filtered_out += 1
        return
    found.columns.learn(row)
    found.about.learn(sidecar)
    found.rows += 1
    found.bytes += size
    compact = dumps(sidecar.to_json()).decode()
    line = dumps([job_id, image, file, ext, size, sha256 or sidecar.image.sha256, stamp,
                  sidecar.caption, row, compact, sidecar.index], option=newline)
    out.write(b"%s\t%d\t%s" % (job_id.encode(), size, line))


def _scan_store(results: BatchResults, store: StoreBatch, where: Where, found: Scan,
                out: BinaryIO, progress: Callable[[int], None] | None) -> None:
    """The store's way: sizes from one listing of ``images/``, sidecars fetched many at a
    time; an item's image is its path in the batch, read later through the store."""
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    n = 0
    for chunk in _chunks(results.done(), STORE_CHUNK):
        present = []
        for result in chunk:
            if clean_relative(result.file) is None:
                found.problem(Omission.OUTSIDE, result.job_id, str(result.file))
                continue
            stamp = store.stamp(result.file)
            if stamp is None or stamp[0] != result.record.size:
                found.problem(Omission.NO_IMAGE, result.job_id, result.file)
            else:
                present.append((result, stamp))
        sidecars = store.read_many([r.sidecar_file() for r, _ in present])
        for result, stamp in present:
            name = result.sidecar_file()
            raw = sidecars.get(name)
            try:
                sidecar = Sidecar.decode(raw) if raw is not None else None
            except ValueError:
                sidecar = None
            if sidecar is None:
                found.problem(Omission.NO_SIDECAR, result.job_id, name)
                continue
            file = result.file
            _keep(found, where, out, dumps, newline, result.job_id, file, file,
                  file.rpartition(".")[2], result.record.size, result.record.sha256_hex,
                  [*stamp, len(raw), zlib.crc32(raw)], sidecar)
        n += len(chunk)
        if progress is not None and n // 1000 > (n - len(chunk)) // 1000:
            progress(n)


def _chunks(items: Iterable[StoredResult], size: int) -> Iterator[list[StoredResult]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def check_where(where: Where, found: Scan) -> None:
    """A ``--where`` key no row has is a typo: say which columns there are."""
    from batchgen.errors import UsageError

    if not found.keys:
        return  # nothing is done yet: there are no columns to check against
    known = found.keys | set(FIXED)
    unknown = sorted(k for k in where.wanted if k not in known)
    if unknown:
        raise UsageError(f"--where {unknown[0]}: no such column; the columns are "
                         f"{', '.join(sorted(known))}")
