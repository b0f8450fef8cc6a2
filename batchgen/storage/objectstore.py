"""A Writer onto an object store: any fsspec URL whose writes are whole objects (``s3://``...).

Each file is one PUT of its whole bytes, so no reader ever sees half an image; the sidecar goes
last, so an image without one is not a result. What exists is learnt from one recursive
listing of ``images/`` (built on the first need, kept up to date by ``save``), never a HEAD per
job. fsspec and the store's client (s3fs for ``s3://``, the extra ``batchgen[s3]``) load only
when a writer is made, so importing the storage package stays light. Credentials and the
endpoint come from the store client's own configuration: for S3 the standard ``AWS_*``
variables, ``AWS_ENDPOINT_URL`` included. This module never sees the API key.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from batchgen.errors import OutputError, UsageError
from batchgen.job import Job
from batchgen.storage.sidecar import Sidecar
from batchgen.storage.writer import SavedFiles

__all__ = ["ObjectStoreWriter", "is_store_url", "open_store"]

_S3 = ("s3", "s3a")
_IMAGES = "images/"
_IMAGE_SUFFIXES = frozenset({"webp", "png", "jpeg", "jpg"})
_CONTENT_TYPES = {"webp": "image/webp", "png": "image/png", "jpeg": "image/jpeg",
                  "jpg": "image/jpeg", "json": "application/json", "txt": "text/plain; charset=utf-8"}


def is_store_url(output: str) -> bool:
    """True for an fsspec URL such as ``s3://bucket/prefix``, false for a local path."""
    scheme, sep, _ = output.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme not in ("file", "local")


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
        self.url, self.protocol, self.fs, self.root = open_store(url, filesystem, storage_options)
        self._results: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"ObjectStoreWriter({self.url!r})"

    # -- the Writer protocol ----------------------------------------------------------------

    def prepare(self) -> None:
        """Prove the prefix is writable (a probe object, put and removed), then list what exists."""
        probe = f"{self.root}/.batchgen-probe-{uuid.uuid4().hex}"
        self._call("write a probe object", probe, self.fs.pipe_file, probe, b"ok")
        try:
            self.fs.rm_file(probe)
        except Exception:  # noqa: BLE001 - a store that lets us write but not delete still works
            pass
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
                try:
                    self.fs.rm_file(self._key(relative))
                except Exception:  # noqa: BLE001 - best effort: the sidecar is missing anyway
                    pass
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
        old = self._call("read", key, self.fs.cat_file, key)
        new = rederived(old, job)
        if job.caption is None:
            with contextlib.suppress(OSError):  # none there: nothing to remove
                self.fs.rm_file(self._key(caption))
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
        base = f"{self.root}/images"
        images: dict[str, int] = {}
        sidecars: set[str] = set()

        def take(name: str, size: int, etag: str = "") -> None:
            stem, dot, suffix = name.rpartition(".")
            if suffix == "json":
                sidecars.add(stem)
            elif dot and suffix in _IMAGE_SUFFIXES:
                images[_IMAGES + name] = size

        if self.protocol in _S3:
            self._call("list", base, _sync_s3_listing, self.fs, base, take)
        else:
            try:
                self.fs.invalidate_cache(base)
            except Exception:  # noqa: BLE001 - a filesystem without a cache
                pass
            found = self._call("list", base, self.fs.find, base, detail=True)
            for path, info in found.items():
                if str(path).startswith(base + "/"):
                    take(str(path)[len(base) + 1:], int(info.get("size") or 0))
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
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] != "images":
            raise OutputError(f"refusing to write {relative}: it is outside {self.url}/images")
        return f"{self.root}/{relative}"

    def _put(self, relative: str, content: bytes) -> None:
        key = self._key(relative)
        extra = {}
        if self.protocol in _S3:
            extra["ContentType"] = _CONTENT_TYPES.get(relative.rpartition(".")[2], "application/octet-stream")
        self._call("write", key, self.fs.pipe_file, key, content, **extra)

    def _call(self, what: str, key: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one store call; any failure of the store's client becomes an OutputError."""
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            raise _output_error(what, f"{self.protocol}://{key}", exc) from exc


def _sync_s3_listing(fs: Any, base: str, take: Callable[[str, int, str], None]) -> None:
    """``take(name under base, bytes)`` for every object under ``base``, page by page.

    Straight from the client's ListObjectsV2 paginator: s3fs's ``find`` would first build a
    dict of several fields per object, about a kilobyte each, for the whole prefix.
    """
    from fsspec.asyn import sync

    sync(fs.loop, _s3_listing, fs, base, take)


async def _s3_listing(fs: Any, base: str, take: Callable[[str, int, str], None]) -> None:
    """``take(name under base, bytes, ETag)`` for every object under ``base``, page by page,
    straight from the ListObjectsV2 paginator (no dict of fields per object)."""
    client = await fs.set_session()
    bucket, _, prefix = base.partition("/")
    prefix += "/"
    cut = len(prefix)
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            take(item["Key"][cut:], item["Size"], item.get("ETag", ""))


def open_store(url: str, filesystem: Any = None,
               storage_options: Mapping[str, Any] | None = None) -> tuple[str, str, Any, str]:
    """(url without a trailing slash, protocol, fsspec filesystem, root key) for a store URL;
    ``filesystem`` is used as given when there is one. UsageError for anything else."""
    if not is_store_url(url):
        raise UsageError(f"{url!r} is not an object store URL such as s3://bucket/prefix")
    url = url.rstrip("/")
    protocol = url.partition("://")[0]
    if filesystem is None:
        filesystem, root = _open(url, protocol, dict(storage_options or {}))
    else:
        root = filesystem._strip_protocol(url)
    return url, protocol, filesystem, str(root).rstrip("/")


def _open(url: str, protocol: str, options: dict[str, Any]) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise UsageError("writing to an object store needs fsspec: pip install 'batchgen[s3]'") from None
    try:
        if protocol in _S3:
            from batchgen.storage.s3session import s3_filesystem

            # Listings must be fresh and environment changes seen: no cached instance or listing.
            fs = s3_filesystem(**{"skip_instance_cache": True, "use_listings_cache": False, **options})
            root = fs._strip_protocol(url)
        else:
            fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        extra = "s3" if protocol in _S3 else protocol
        raise UsageError(f"writing to {protocol}:// needs a package that is not installed "
                         f"({exc}); for S3: pip install 'batchgen[{extra}]'") from None
    except ValueError as exc:
        raise UsageError(f"cannot use {url}: {exc}") from None
    return fs, root


def _output_error(what: str, where: str, exc: Exception) -> OutputError:
    if isinstance(exc, PermissionError):
        hint = ("the store refused the credentials or the request; check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's policy")
    elif isinstance(exc, FileNotFoundError):
        hint = "the bucket does not exist (or is not visible with these credentials); create it first"
    elif type(exc).__name__.endswith(("ConnectionError", "ConnectTimeoutError")):
        hint = "the store cannot be reached; check AWS_ENDPOINT_URL and the network"
    else:
        hint = "run the same command again once the store is reachable"
    reason = str(exc) or type(exc).__name__
    return OutputError(f"cannot {what} {where} ({reason}): {hint}. Finished images and the "
                       f"ledger are intact.")
