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

import asyncio
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.storage.ledger import Ledger
from batchgen.storage.objectstore import _output_error, _s3_listing, is_store_url, open_store

__all__ = ["LedgerCopy", "StoreBatch", "is_store_url", "open_store_batch"]

_S3 = ("s3", "s3a")
#: objects asked for at once (each its own request, in flight together)
CONCURRENCY = 32


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

    def __init__(self, url: str, fs: Any, root: str, ledger: Ledger,
                 copies: Sequence[LedgerCopy]) -> None:
        self.url = url
        self.fs = fs
        self.root = root
        self.protocol = url.partition("://")[0]
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
        base = f"{self.root}/images"
        found: dict[str, int] = {}

        def take(name: str, size: int, tag: str) -> None:
            found["images/" + name] = (int(size) << 32) | zlib.crc32(tag.encode())

        if self.protocol in _S3:
            from fsspec.asyn import sync

            self._call("list", base, sync, self.fs.loop, _s3_listing, self.fs, base, take)
        else:
            try:
                listed = self.fs.find(base, detail=True)
            except FileNotFoundError:
                listed = {}
            except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
                raise _output_error("list", f"{self.protocol}://{base}", exc) from exc
            for path, info in listed.items():
                if str(path).startswith(base + "/"):
                    tag = str(info.get("ETag") or info.get("mtime") or info.get("created") or "")
                    take(str(path)[len(base) + 1:], int(info.get("size") or 0), tag)
        return found

    # -- reading ----------------------------------------------------------------------------

    def key(self, relative: str) -> str:
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise UsageError(f"refusing to read {relative}: it is outside {self.url}")
        return f"{self.root}/{relative}"

    def read_bytes(self, relative: str) -> bytes:
        """One file's bytes; FileNotFoundError when it is not there."""
        key = self.key(relative)
        try:
            return self.fs.cat_file(key, **({"max_concurrency": 1} if self.protocol in _S3 else {}))
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            raise _output_error("read", f"{self.protocol}://{key}", exc) from exc

    def read_many(self, relatives: Sequence[str]) -> dict[str, bytes | None]:
        """Many files at once, ``CONCURRENCY`` requests in flight (None: not there)."""
        if not relatives:
            return {}
        keys = [self.key(r) for r in relatives]
        try:
            if getattr(self.fs, "async_impl", False):
                from fsspec.asyn import sync

                # s3fs asks for an object's size (a HEAD) before a GET it could split up:
                # these are small, and one GET each is all they need
                extra = {"max_concurrency": 1} if self.protocol in _S3 else {}
                got = sync(self.fs.loop, _cat_all, self.fs, keys, extra)
            else:
                with ThreadPoolExecutor(min(CONCURRENCY, len(keys))) as pool:
                    got = list(pool.map(lambda k: _or_error(self.fs.cat_file, k), keys))
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            raise _output_error("read", self.url, exc) from exc
        out: dict[str, bytes | None] = {}
        for relative, key, value in zip(relatives, keys, got, strict=True):
            if isinstance(value, FileNotFoundError):
                out[relative] = None
            elif isinstance(value, BaseException):
                raise _output_error("read", f"{self.protocol}://{key}", value) from value
            else:
                out[relative] = value
        return out

    def download(self, relative: str, target: Path) -> bool:
        """Copy one file to a local path (False: not in the store)."""
        try:
            data = self.read_bytes(relative)
        except FileNotFoundError:
            return False
        Path(target).write_bytes(data)
        return True

    def _call(self, what: str, key: str, func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except FileNotFoundError:
            return None  # nothing under the prefix: an empty listing
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            raise _output_error(what, f"{self.protocol}://{key}", exc) from exc


def open_store_batch(url: str, *, filesystem: Any = None,
                     storage_options: Mapping[str, Any] | None = None) -> StoreBatch:
    """The batch under ``url``: its ledger copies fetched (``LedgerMirror.fetch``: one
    listing, the newest whole copy of each ledger) and replayed as one.

    UsageError when no batch is there (no ledger copy under the prefix); OutputError when
    the store cannot be read. ``filesystem`` replaces the one fsspec would make (a seam for
    callers holding a configured filesystem)."""
    from batchgen.storage.mirror import COPIES, LedgerMirror

    url, _, filesystem, root = open_store(url, filesystem, storage_options)
    mirror = LedgerMirror(url, filesystem=filesystem)
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
    return StoreBatch(url, filesystem, root, ledger, copies)


async def _cat_all(fs: Any, keys: Iterable[str], extra: Mapping[str, Any]) -> list[Any]:
    """Every key's bytes (or its exception), at most ``CONCURRENCY`` requests at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str) -> Any:
        async with gate:
            try:
                return await fs._cat_file(key, **extra)
            except Exception as exc:  # noqa: BLE001 - sorted out by the caller, per key
                return exc

    return await asyncio.gather(*(one(k) for k in keys))


def _or_error(func: Callable[[str], bytes], key: str) -> Any:
    try:
        return func(key)
    except Exception as exc:  # noqa: BLE001 - sorted out by the caller, per key
        return exc
