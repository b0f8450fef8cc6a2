"""A Writer onto an object store: any fsspec URL whose writes are whole objects (``s3://``...).

Each file is one PUT of its whole bytes, so no reader ever sees half an image; the sidecar goes
last, so an image without one is not a result. What exists is learnt from one recursive
listing of ``images/`` (built on the first need, kept up to date by ``save``), never a HEAD per
job. Every access goes through a ``Store`` (``store.py``: the URL opened, errors translated,
keys checked); fsspec and the store's client (s3fs for ``s3://``, the extra ``batchgen[s3]``)
load only when a writer is made, so importing the storage package stays light. Credentials
and the endpoint come from the store client's own configuration: for S3 the standard
``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included. This module never sees the API key.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from batchgen.errors import OutputError
from batchgen.job import Job
from batchgen.storage.sidecar import Sidecar
from batchgen.storage.store import IMAGE_SUFFIXES, Store, is_store_url, open_store
from batchgen.storage.writer import SavedFiles

__all__ = ["ObjectStoreWriter", "is_store_url", "open_store"]

_IMAGES = "images/"


class ObjectStoreWriter:
    """One batch's results under ``url`` (``images/`` beneath it, as in a batch folder).

    ``filesystem`` replaces the one fsspec would make from the URL (a seam for tests and for
    callers holding a configured filesystem); ``storage_options`` go to fsspec otherwise.
    ``save`` is blocking network I/O: run it off the event loop.
    """

    #: the engine runs ``save`` and ``prepare`` in a worker thread: each is network I/O
    remote = True

    def __init__(self, url: str, *, filesystem: Any = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.store = Store(url, filesystem=filesystem, storage_options=storage_options)
        self.url, self.fs = self.store.url, self.store.fs
        self._results: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"ObjectStoreWriter({self.url!r})"

    # -- the Writer protocol ----------------------------------------------------------------

    def prepare(self) -> None:
        """Prove the prefix is writable (a probe object, put and removed), then list what exists."""
        probe = self.store.key(f".batchgen-probe-{uuid.uuid4().hex}")
        self.store.put(probe, b"ok", "write a probe object")
        self.store.remove(probe)  # a store that lets us write but not delete still works
        self.refresh()

    def image_file(self, job: Job) -> str:
        return self._relative(job, job.extension)

    def has_result(self, file: str, size: int, sidecar_size: int = 0) -> bool:
        """True when the listing holds the image at ``size`` bytes and its sidecar (the
        sidecar's own size is not checked: a PUT is whole or absent, never cut)."""
        return self._index().get(file) == size

    def sync(self) -> None:
        """Nothing to do: a PUT that returned is durable at the store."""

    def save(self, job: Job, data: bytes, sidecar: Sidecar) -> SavedFiles:
        """PUT image, caption and sidecar, each whole, the sidecar last. Blocking; OutputError."""
        sha = hashlib.sha256(data).hexdigest()
        file = self.image_file(job)
        sidecar.image.file, sidecar.image.bytes, sidecar.image.sha256 = file, len(data), sha
        files = [(file, data)]
        if job.caption is not None:
            files.append((self._relative(job, "txt"), job.caption.encode()))
        files.append((self._relative(job, "json"), sidecar.encode()))
        results = self._index()
        results.pop(file, None)  # until its sidecar is back, this image is no result
        written: list[str] = []
        try:
            for relative, content in files:
                self._put(relative, content)
                written.append(relative)
        except OutputError:
            for relative in reversed(written):  # never leave an image without its sidecar
                self.store.remove(self._key(relative))  # best effort: the sidecar is missing anyway
            raise
        results[file] = len(data)
        return SavedFiles(file=file, size=len(data), sha256=sha, sidecar_size=len(files[-1][1]))

    # -- what exists ------------------------------------------------------------------------

    def rewrite_derived(self, job: Job, file: str) -> tuple[int, bool]:
        """Rewrite the caption and the sidecar fields the manifest gives (storage/derived.py)
        beside the image recorded at ``file``, each one whole PUT; returns the sidecar's bytes
        and whether it changed. Blocking; raises OutputError, or ValueError when the sidecar there is not one."""
        from batchgen.storage.derived import rederived, sibling

        side, caption = sibling(file, "json"), sibling(file, "txt")
        key = self._key(side)
        old = self.store.call("read", key, self.fs.cat_file, key)
        new = rederived(old, job)
        if job.caption is None:
            self.store.remove(self._key(caption))  # none there: nothing to remove
        else:
            self._put(caption, job.caption.encode())
        if new != old:
            self._put(side, new)
        return len(new), new != old

    def refresh(self) -> None:
        """List ``images/`` again (one paged listing), forgetting what was known.

        Only images whose sidecar is listed too are kept, one entry each (name -> bytes), so
        the index costs about one short string and one integer per finished job.
        """
        images: dict[str, int] = {}
        sidecars: set[str] = set()

        def take(name: str, size: int, tag: str, entry: Mapping[str, Any]) -> None:
            stem, dot, suffix = name.rpartition(".")
            if suffix == "json":
                sidecars.add(stem)
            elif dot and suffix in IMAGE_SUFFIXES:
                images[_IMAGES + name] = size

        self.store.list("images", take)
        orphans = [file for file in images if file[len(_IMAGES):].rpartition(".")[0] not in sidecars]
        for file in orphans:
            del images[file]
        self._results = images

    def results(self) -> dict[str, int]:
        """Every image under ``images/`` that has its sidecar (name -> bytes), as last listed."""
        return dict(self._index())

    def _index(self) -> dict[str, int]:
        if self._results is None:
            self.refresh()
        assert self._results is not None
        return self._results

    # -- single objects ---------------------------------------------------------------------

    def _relative(self, job: Job, suffix: str) -> str:
        return f"images/{job.name}.{suffix}"

    def _key(self, relative: str) -> str:
        try:
            if relative.split("/")[0] != "images":
                raise ValueError(relative)
            return self.store.key(relative)
        except ValueError:
            raise OutputError(f"refusing to write {relative}: it is outside {self.url}/images") from None

    def _put(self, relative: str, content: bytes) -> None:
        self.store.put(self._key(relative), content)
