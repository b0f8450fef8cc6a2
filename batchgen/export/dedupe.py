"""``--dedupe``: duplicate images dropped before the export is cut into units.

``exact`` drops a row whose image bytes equal an earlier row's (the same sha256: identical
requests, a fixed seed repeated, give byte-identical images). ``near`` drops a row whose
perceptual hash (pHash, 64 bits, from the ``imagehash`` package) is within ``distance`` bits
of an earlier kept row's: the same picture re-encoded, resized or barely changed. "Earlier" is
the manifest's order (the job's index, then its id), so the first of each group is kept,
whichever run or shard finished first.

Near duplicates are found without comparing every pair: a 64-bit hash is cut into
``distance + 1`` bands, and two hashes within ``distance`` bits agree on at least one band
whole (pigeonhole), so only rows sharing a band are compared. Memory: one small tuple per
row (its index, spill offset, digest) and, for ``near``, one hash per kept row.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from batchgen.errors import UsageError
from batchgen.export.images import ImageSource
from batchgen.export.scan import Item, Scan

__all__ = ["NEAR_DISTANCE", "Dedupe", "Duplicate", "drop_duplicates"]

#: the default ``--dedupe-distance``: bits of 64 that may differ between near duplicates
NEAR_DISTANCE = 4
_BITS = 64


class Dedupe(StrEnum):
    EXACT = "exact"
    NEAR = "near"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A row left out as a duplicate: its job and path, the kept job it duplicates, and
    how many hash bits differ (0 for exact)."""

    job_id: str
    path: str
    same_as: str
    distance: int


def drop_duplicates(found: Scan, mode: Dedupe, distance: int, images: ImageSource,
                    spill: Path) -> list[Duplicate]:
    """Rewrite the scan's spill without the duplicates (the rest in their order); returns
    what was dropped, in the manifest's order."""
    if not 0 <= distance < _BITS // 2:
        raise UsageError(f"--dedupe-distance {distance}: between 0 and {_BITS // 2 - 1} bits")
    order = sorted((item.index, item.key, offset) for offset, item in _items(found))
    offsets = [offset for _, _, offset in order]
    if mode is Dedupe.EXACT:
        dropped = _exact(found.load(offsets), images)
    else:
        dropped = _near(found.load(offsets), images, distance)
    if dropped:
        _rewrite(found, {d.job_id for d in dropped}, spill)
    return dropped


def _items(found: Scan) -> Iterator[tuple[int, Item]]:
    for entry in found.entries():
        yield entry.offset, entry.item()


def _exact(items: Iterator[Item], images: ImageSource) -> list[Duplicate]:
    first: dict[str, str] = {}
    dropped = []
    for item in items:
        digest = item.sha256 or _digest(item, images)
        if digest is None:
            continue  # unreadable: the writer leaves it out and says why
        kept = first.setdefault(digest, item.key)
        if kept != item.key:
            dropped.append(Duplicate(item.key, item.path, kept, 0))
    return dropped


def _digest(item: Item, images: ImageSource) -> str | None:
    for _, data in images.checked([item]):
        return hashlib.sha256(data).hexdigest() if data is not None else None
    return None


def _near(items: Iterator[Item], images: ImageSource, distance: int) -> list[Duplicate]:
    phash = _phash()
    bands = distance + 1
    width = _BITS // bands
    masks = [(i * width, ((1 << (width if i < bands - 1 else _BITS - i * width)) - 1))
             for i in range(bands)]
    index: dict[tuple[int, int], list[tuple[int, str]]] = {}
    dropped = []
    for item, data in images.checked(items):
        if data is None:
            continue
        value = phash(data)
        if value is None:
            continue
        keys = [(i, (value >> shift) & mask) for i, (shift, mask) in enumerate(masks)]
        match = None
        for key in keys:
            for other, job in index.get(key, ()):
                bits = (value ^ other).bit_count()
                if bits <= distance and (match is None or bits < match[1]):
                    match = (job, bits)
        if match is not None:
            dropped.append(Duplicate(item.key, item.path, match[0], match[1]))
            continue
        for key in keys:
            index.setdefault(key, []).append((value, item.key))
    return dropped


def _phash():  # type: ignore[no-untyped-def]
    """pHash of image bytes as a 64-bit int (None when they do not decode)."""
    try:
        import imagehash
        from PIL import Image
    except ImportError:
        raise UsageError("--dedupe near needs the imagehash package: pip install imagehash") from None

    def phash(data: bytes) -> int | None:
        try:
            with Image.open(io.BytesIO(data)) as img:
                return int(str(imagehash.phash(img, hash_size=8)), 16)
        except Exception:  # noqa: BLE001 - a picture that does not decode has no hash
            return None
    return phash


def _rewrite(found: Scan, drop: set[str], spill: Path) -> None:
    """The spill without the dropped rows, renamed over it; the counts follow."""
    tmp = spill.with_name(spill.name + ".dedupe")
    rows = size = 0
    with open(tmp, "wb") as out:
        for entry in found.entries():
            if entry.key in drop:
                continue
            out.write(b"%s\t%d\t%s" % (entry.key.encode(), entry.size, entry.line))
            rows += 1
            size += entry.size
    os.replace(tmp, spill)
    found.rows, found.bytes = rows, size
