"""One object-store prefix (``s3://bucket/prefix``, or any fsspec URL whose writes are whole
objects): every store access batchgen makes goes through a ``Store``.

It opens the filesystem from the URL once, turns every failure of the store's client into an
``OutputError`` that says what to fix (translated here and nowhere else), checks that a path
stays under the prefix, lists a prefix page by page (for S3 straight from the ListObjectsV2
paginator), and gets and puts whole objects, many at once where asked. The writer
(``objectstore.py``), the ledger copies (``mirror.py``) and a batch read back (``remote.py``)
are built on it. fsspec and the store's client (s3fs for ``s3://``, the ``s3`` extra) load
only when a Store is made, so importing the storage package stays light. Credentials and the
endpoint come from the client's own configuration (for S3 the standard ``AWS_*`` variables);
this module never sees the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batchgen.errors import OutputError, UsageError

__all__ = ["CONCURRENCY", "IMAGE_SUFFIXES", "Store", "is_store_url", "open_store", "store_error"]

_S3 = ("s3", "s3a")
#: objects asked for at once by ``get_many`` (each its own request, in flight together)
CONCURRENCY = 32
_CONTENT_TYPES = {"webp": "image/webp", "png": "image/png", "jpeg": "image/jpeg",
                  "jpg": "image/jpeg", "json": "application/json", "txt": "text/plain; charset=utf-8"}
#: the suffixes of the images a batch stores
IMAGE_SUFFIXES = frozenset(s for s, kind in _CONTENT_TYPES.items() if kind.startswith("image/"))

#: ``take(name under the prefix, bytes, ETag or another tag that changes with the object,
#: the listing's own entry)``: called once per object listed
Take = Callable[[str, int, str, Mapping[str, Any]], None]


def is_store_url(output: str) -> bool:
    """True for an fsspec URL such as ``s3://bucket/prefix``, false for a local path."""
    scheme, sep, _ = output.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme not in ("file", "local")


class Store:
    """The objects under ``url``, addressed by their path under it (``images/a.png``).

    ``filesystem`` replaces the one fsspec would make from the URL (a seam for tests and for
    callers holding a configured filesystem: a writer and its ledger mirror share one
    connection pool); ``storage_options`` go to fsspec otherwise. Every method is blocking
    network I/O; failures of the store are ``OutputError``s.
    """

    def __init__(self, url: str, *, filesystem: Any = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.url, self.protocol, self.fs, self.root = open_store(url, filesystem, storage_options)
        self.s3 = self.protocol in _S3

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- keys and errors --------------------------------------------------------------------

    def key(self, relative: str) -> str:
        """The store key of a path under the prefix; ValueError for one that would leave it."""
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{relative} is outside {self.url}")
        return f"{self.root}/{relative}"

    def call(self, what: str, key: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one call of the store's client; any failure becomes an OutputError naming
        ``what`` was being done to ``key`` and what to fix."""
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            raise store_error(what, f"{self.protocol}://{key}", exc) from exc

    # -- listing ----------------------------------------------------------------------------

    def list(self, relative: str, take: Take) -> None:
        """``take`` each object under ``relative`` (its name under it, bytes, tag, entry),
        from one paged listing, fresh (no cached listing). Nothing there: nothing taken."""
        base = self.key(relative)
        try:
            if self.s3:
                from fsspec.asyn import sync

                sync(self.fs.loop, _s3_listing, self.fs, base, take)
                return
            with contextlib.suppress(Exception):  # a filesystem without a cache
                self.fs.invalidate_cache(base)
            found = self.fs.find(base, detail=True)
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            if isinstance(_translated(exc), FileNotFoundError):
                return  # no such bucket or prefix: nothing to list
            raise store_error("list", f"{self.protocol}://{base}", exc) from exc
        for path, info in found.items():
            if str(path).startswith(base + "/"):
                tag = str(info.get("ETag") or info.get("mtime") or info.get("created") or "")
                take(str(path)[len(base) + 1:], int(info.get("size") or 0), tag, info)

    # -- whole objects ----------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """One object's bytes, in one GET; FileNotFoundError when it is not there."""
        try:
            return self.fs.cat_file(key, **self._whole)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            raise store_error("read", f"{self.protocol}://{key}", exc) from exc

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Many objects at once, ``CONCURRENCY`` requests in flight, in the order asked
        (None: not there)."""
        if not keys:
            return []
        try:
            if getattr(self.fs, "async_impl", False):
                from fsspec.asyn import sync

                got = sync(self.fs.loop, _cat_all, self.fs, keys, self._whole)
            else:
                with ThreadPoolExecutor(min(CONCURRENCY, len(keys))) as pool:
                    got = list(pool.map(lambda k: _or_error(self.fs.cat_file, k), keys))
        except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
            raise store_error("read", self.url, exc) from exc
        out: list[bytes | None] = []
        for key, value in zip(keys, got, strict=True):
            if isinstance(value, FileNotFoundError):
                out.append(None)
            elif isinstance(value, BaseException):
                raise store_error("read", f"{self.protocol}://{key}", value) from value
            else:
                out.append(value)
        return out

    def put(self, key: str, data: bytes, what: str = "write") -> None:
        """One whole object (one PUT: no reader ever sees half of it), typed by its suffix."""
        extra = {}
        if self.s3:
            extra["ContentType"] = _CONTENT_TYPES.get(key.rpartition(".")[2], "application/octet-stream")
        self.call(what, key, self.fs.pipe_file, key, data, **extra)

    def remove(self, key: str, recursive: bool = False) -> bool:
        """Remove an object (or everything under a key); best effort, False when it failed."""
        try:
            if recursive:
                self.fs.rm(key, recursive=True)
            else:
                self.fs.rm_file(key)
        except Exception:  # noqa: BLE001 - callers remove leftovers, never what matters
            return False
        return True

    @property
    def _whole(self) -> dict[str, Any]:
        # s3fs asks for an object's size (a HEAD) before a GET it could split up: what
        # batchgen reads is small, and one GET each is all it needs
        return {"max_concurrency": 1} if self.s3 else {}


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


def store_error(what: str, where: str, exc: Exception) -> OutputError:
    """A failure of the store's client, as the OutputError batchgen shows: what was being done
    where, the client's reason, and what to check."""
    exc = _translated(exc)
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


def _translated(exc: Exception) -> Exception:
    """An S3 client's own error (straight from botocore, as the paginator raises it) as the
    Python error s3fs would have made of it (NoSuchBucket: FileNotFoundError...)."""
    if not isinstance(getattr(exc, "response", None), dict):  # not a botocore ClientError
        return exc
    try:
        from s3fs.errors import translate_boto_error
    except ImportError:
        return exc
    return translate_boto_error(exc)


async def _s3_listing(fs: Any, base: str, take: Take) -> None:
    """``take`` every object under ``base``, page by page, straight from the ListObjectsV2
    paginator: s3fs's ``find`` would first build a dict of several fields per object, about
    a kilobyte each, for the whole prefix."""
    client = await fs.set_session()
    bucket, _, prefix = base.partition("/")
    prefix += "/"
    cut = len(prefix)
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            take(item["Key"][cut:], item["Size"], item.get("ETag", ""), item)


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
