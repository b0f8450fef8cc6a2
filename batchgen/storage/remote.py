"""A batch read back from an object store: the ledger copies a run uploads, and its files.

A run writing to ``s3://bucket/prefix`` keeps its ledger on local disk and copies it beside
``images/``, under ``ledger/`` (``storage/mirror.py``). ``open_store_batch`` fetches the copies
as a run on another machine would (one listing, never a HEAD per file) into a private
temporary folder, replays them as one ``Ledger`` and removes the folder again. ``StoreBatch`` then reads the batch's files for
status and export: one paged listing of ``images/`` for what exists, and many objects at
once (the store client's own concurrency) rather than one round trip after another.

fsspec and the store's client load only when a batch is opened, so ``import batchgen.storage``
stays light. Credentials and the endpoint come from the client's own configuration (for S3
the standard ``AWS_*`` variables). It reads only: nothing is ever written to the store.
"""

from __future__ import annotations

import shutil
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.storage.ledger import Ledger
from batchgen.storage.store import CONCURRENCY, Store, is_store_url

__all__ = ["CONCURRENCY", "LedgerCopy", "StoreBatch", "is_store_url", "open_store_batch"]


@dataclass(frozen=True, slots=True)
class LedgerCopy:
    """One ledger copy in the store: its path in the batch, its size, when it was uploaded."""

    relative: str
    size: int
    uploaded: float | None  # seconds since the epoch (the object's LastModified), None: unknown


class StoreBatch:
    """One batch under a store URL: its ledger (replayed from the copies) and a reader of
    its files by their path in the batch (``images/<name>.png``, as in a batch folder).

    Every method is blocking network I/O; failures of the store become ``OutputError``."""

    def __init__(self, store: Store, ledger: Ledger, copies: Sequence[LedgerCopy]) -> None:
        self.store = store
        self.url = store.url
        self.root = store.root
        self.ledger = ledger
        self.copies = list(copies)
        self._images: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"StoreBatch({self.url!r})"

    @property
    def uploaded(self) -> float | None:
        """When the newest ledger copy was uploaded: the figures are as of then."""
        times = [c.uploaded for c in self.copies if c.uploaded is not None]
        return max(times) if times else None

    # -- what exists ------------------------------------------------------------------------

    def size(self, relative: str) -> int | None:
        """The bytes of a file under ``images/`` as listed (None: not there)."""
        stamp = self._index().get(relative)
        return None if stamp is None else stamp >> 32

    def stamp(self, relative: str) -> tuple[int, int] | None:
        """(bytes, a 32-bit digest of the object's ETag): what changes when the object does."""
        stamp = self._index().get(relative)
        return None if stamp is None else (stamp >> 32, stamp & 0xFFFFFFFF)

    def _index(self) -> dict[str, int]:
        if self._images is None:
            self._images = self._list_images()
        return self._images

    def _list_images(self) -> dict[str, int]:
        """Every object under ``images/`` -> bytes << 32 | crc32(ETag), from one paged listing
        (one short string and one integer per file, whatever the batch's size)."""
        found: dict[str, int] = {}

        def take(name: str, size: int, tag: str, entry: Mapping[str, Any]) -> None:
            found["images/" + name] = (int(size) << 32) | zlib.crc32(tag.encode())

        self.store.list("images", take)
        return found

    # -- reading ----------------------------------------------------------------------------

    def key(self, relative: str) -> str:
        try:
            return self.store.key(relative)
        except ValueError:
            raise UsageError(f"refusing to read {relative}: it is outside {self.url}") from None

    def read_bytes(self, relative: str) -> bytes:
        """One file's bytes; FileNotFoundError when it is not there."""
        return self.store.get(self.key(relative))

    def read_many(self, relatives: Sequence[str]) -> dict[str, bytes | None]:
        """Many files at once, ``CONCURRENCY`` requests in flight (None: not there)."""
        got = self.store.get_many([self.key(r) for r in relatives])
        return dict(zip(relatives, got, strict=True))

    def download(self, relative: str, target: Path) -> bool:
        """Copy one file to a local path (False: not in the store)."""
        try:
            data = self.read_bytes(relative)
        except FileNotFoundError:
            return False
        Path(target).write_bytes(data)
        return True


def open_store_batch(url: str, *, filesystem: Any = None,
                     storage_options: Mapping[str, Any] | None = None) -> StoreBatch:
    """The batch under ``url``: its ledger copies fetched (``LedgerMirror.fetch``: one
    listing, the newest whole copy of each ledger) and replayed as one.

    UsageError when no batch is there (no ledger copy under the prefix); OutputError when
    the store cannot be read. ``filesystem`` replaces the one fsspec would make (a seam for
    callers holding a configured filesystem)."""
    from batchgen.storage.mirror import COPIES, LedgerMirror

    store = Store(url, filesystem=filesystem, storage_options=storage_options)
    url = store.url
    mirror = LedgerMirror(url, filesystem=store.fs)
    folder = Path(tempfile.mkdtemp(prefix="batchgen-store-"))
    try:
        if not mirror.fetch(folder):
            raise UsageError(f"no batch under {url}: there is no ledger copy under {url}/{COPIES}/ "
                             f"(check the bucket and prefix; a run copies its ledger there every "
                             f"few seconds and when it ends)")
        try:
            ledger = Ledger.read(folder)
        except UsageError as exc:
            raise UsageError(f"no batch under {url}: {exc.message.split(': ', 1)[-1]}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    copies = [LedgerCopy(relative, size, at) for relative, (size, at) in sorted(mirror.copies.items())]
    return StoreBatch(store, ledger, copies)
