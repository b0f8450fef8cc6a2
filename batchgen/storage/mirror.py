"""A batch whose images go to an object store keeps its ledger on local disk, copied to the store.

An object store has no append and no lock, so the ledger keeps its crash guarantees where they
hold: in a local state folder (``state_folder``), with the lock and fsyncs of any batch folder.
``LedgerMirror`` copies the run's own ledger file to the store every few seconds, and when the
run ends, so ``status`` and ``export`` can read the batch from anywhere. A copy is append-only
too: a *generation* is the whole file once (``000000.jsonl``), then only the lines added since,
one small object per push (``000001.jsonl``, ...), so a copy costs what the run wrote, not the
size of the ledger, however big the batch. A compaction, or parts outgrowing the base, starts a
new generation; the old ones are removed once it is whole. Under the batch's prefix::

    ledger/ledger.jsonl/<generation>/000000.jsonl, 000001.jsonl, ...
    ledger/ledgers/shard-I-of-N.jsonl/<generation>/...

Generations are named by time, so the newest with its ``000000`` is the copy. Before a run
opens its ledger, ``fetch`` brings every copy down beside it: a run on another machine (a
rescheduled array task, a laptop that finishes a cluster's batch) knows every task recorded up
to the last push, and the ledger merges them by time. What a copy holds that the local file
lacks (another machine wrote it last) is merged into the local file before anything is pushed
back, so a push never loses a record.

Every access goes through a ``Store`` (``store.py``), so fsspec is imported only when a
mirror is made (the ``s3`` extra); this module never sees the API key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchgen.errors import OutputError
from batchgen.storage.layout import MIRROR_DIR, ledger_files
from batchgen.storage.store import Store, store_error

__all__ = ["MIRROR_DIR", "LedgerMirror", "state_folder"]

#: Seconds between two pushes of a running batch's new ledger lines to the store.
EVERY = 5.0
#: Under the batch's prefix: the ledger copies.
COPIES = "ledger"
#: A new generation once the parts hold more than the base, or this many parts.
MAX_PARTS = 500
_LEDGER = re.compile(r"(?:ledger\.jsonl|ledgers/shard-\d+-of-\d+\.jsonl)")
_PART = re.compile(r"(\d{6})\.jsonl")


def state_folder(url: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the ledger of the batch at ``url`` lives on this machine, by default:
    ``$XDG_STATE_HOME/batchgen/<url as a name>-<8 hex of its SHA-256>`` (``~/.local/state``
    without XDG_STATE_HOME). The same URL always finds the same folder."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").partition("://")[2])[-80:] or "batch"
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:8]
    return Path(base) / "batchgen" / f"{name}-{digest}"


class LedgerMirror:
    """The store's copies of a batch's ledgers: fetched before a run, pushed during and after.

    ``filesystem`` replaces the one fsspec would make from the URL. Blocking network I/O:
    the runner calls it from a worker thread.
    """

    def __init__(self, url: str, *, filesystem: Any = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.store = Store(url, filesystem=filesystem, storage_options=storage_options)
        self.url = self.store.url
        self.last_error: OutputError | None = None
        self._pushed: dict[str, _Pushed] = {}
        #: what the last ``fetch`` found: relative path -> (bytes, when its newest part was
        #: put, in seconds since the epoch, or None where the store does not say)
        self.copies: dict[str, tuple[int, float | None]] = {}

    def __repr__(self) -> str:
        return f"LedgerMirror({self.url!r})"

    def fetch(self, folder: Path) -> dict[str, Path]:
        """Download the store's ledger copies into ``folder/.store/`` (one listing, then the
        newest whole generation of each ledger, its parts fetched together); returns them by
        relative path, for ``Ledger``.

        Shards on one machine may share a state folder, and each fetches while the others
        read: every copy is written under a name of this process's and renamed into place, so
        a reader sees a whole older copy or a whole newer one, and only copies the store no
        longer holds are removed."""
        target = Path(folder) / MIRROR_DIR
        target.mkdir(parents=True, exist_ok=True)
        found: dict[str, Path] = {}
        self.copies = {}
        for number, (relative, parts) in enumerate(self._newest().items()):
            keys = [key for key, _ in parts]
            data = self.store.get_many(keys)
            if None in data:  # removed since the listing: read the newer generation next time
                missing = keys[data.index(None)]
                raise store_error("read", f"{self.store.protocol}://{missing}", FileNotFoundError(missing))
            local = target / relative
            local.parent.mkdir(parents=True, exist_ok=True)
            part = local.with_name(f".fetch-{os.getpid()}-{number}")
            with open(part, "wb") as fh:
                for chunk in data:  # in order; a part's last line is always whole
                    fh.write(chunk)
            os.replace(part, local)
            found[relative] = local
            times = [at for _, at in parts if at is not None]
            self.copies[relative] = (local.stat().st_size, max(times) if times else None)
        for path in ledger_files(target):
            if path.relative_to(target).as_posix() not in found:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return found

    def push(self, ledger_file: Path, relative: str) -> bool:
        """Copy what the ledger gained since the last push: one part with the new whole
        lines, or a new generation with the whole file (the first push of a run, after a
        compaction, or once the parts outgrow the base). False, with ``last_error`` set, when
        the store refused: the local ledger stays the record, and the next push tries again."""
        try:
            with open(ledger_file, "rb") as fh:
                st = os.fstat(fh.fileno())
                mine = self._pushed.get(relative)
                fresh = (mine is None or mine.inode != st.st_ino or st.st_size < mine.offset
                         or mine.parts_bytes > mine.base_bytes or mine.seq > MAX_PARTS)
                start = 0 if fresh else mine.offset
                fh.seek(start)
                data = fh.read(st.st_size - start)
        except OSError:
            return False
        data = data[:data.rfind(b"\n") + 1]
        try:
            if fresh:
                generation = f"{time.time_ns():020d}-{os.getpid()}"
                self._put(relative, generation, 0, data)
                self._pushed[relative] = _Pushed(generation, st.st_ino, len(data), 1, len(data))
                self._drop_older(relative, generation)
            elif data:
                self._put(relative, mine.generation, mine.seq, data)
                mine.offset += len(data)
                mine.seq += 1
                mine.parts_bytes += len(data)
        except OutputError as exc:
            self.last_error = exc
            return False
        return True

    # -- the store's side -------------------------------------------------------------------

    def _put(self, relative: str, generation: str, seq: int, data: bytes) -> None:
        key = self.store.key(f"{COPIES}/{relative}/{generation}/{seq:06d}.jsonl")
        self.store.put(key, data, "copy the ledger to")

    def _listing(self) -> dict[str, dict[str, dict[int, float | None]]]:
        """Every copy under ``ledger/``: relative path -> generation -> part number -> when
        it was put (one recursive listing)."""
        copies: dict[str, dict[str, dict[int, float | None]]] = {}

        def take(rest: str, size: int, tag: str, entry: Mapping[str, Any]) -> None:
            relative, _, tail = rest.rpartition("/")
            relative, _, generation = relative.rpartition("/")
            part = _PART.fullmatch(tail)
            if part is None or not _LEDGER.fullmatch(relative) or not generation:
                return
            copies.setdefault(relative, {}).setdefault(generation, {})[int(part.group(1))] = _put_at(entry)

        self.store.list(COPIES, take)
        return copies

    def _newest(self) -> dict[str, list[tuple[str, float | None]]]:
        """Each ledger's newest whole generation, as its parts in order, (key, when put): up
        to the first missing part (a push that failed is sent again as a new generation)."""
        chosen: dict[str, list[tuple[str, float | None]]] = {}
        for relative, generations in self._listing().items():
            for generation in sorted(generations, reverse=True):
                parts = generations[generation]
                if 0 not in parts:
                    continue  # its base was never put whole: not a copy
                seq = 0
                found = []
                while seq in parts:
                    found.append((self.store.key(f"{COPIES}/{relative}/{generation}/{seq:06d}.jsonl"),
                                  parts[seq]))
                    seq += 1
                chosen[relative] = found
                break
        return chosen

    def _drop_older(self, relative: str, generation: str) -> None:
        """Remove the generations before ``generation`` (best effort: readers take the newest)."""
        try:
            generations = self._listing().get(relative, {})
        except OutputError:
            return  # leftovers cost space, never correctness
        for old in generations:
            if old < generation:
                self.store.remove(self.store.key(f"{COPIES}/{relative}/{old}"), recursive=True)


def _put_at(info: Mapping[str, Any]) -> float | None:
    """When an object was put, from a listing's entry (seconds since the epoch)."""
    from datetime import datetime

    for name in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


class _Pushed:
    """What this process has pushed of one ledger: its generation and how far it got."""

    __slots__ = ("generation", "inode", "offset", "seq", "base_bytes", "parts_bytes")

    def __init__(self, generation: str, inode: int, offset: int, seq: int, base_bytes: int) -> None:
        self.generation = generation
        self.inode = inode
        self.offset = offset
        self.seq = seq
        self.base_bytes = base_bytes
        self.parts_bytes = 0
