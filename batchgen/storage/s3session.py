"""s3fs filesystems whose client is closed on its own event loop when they are collected.

s3fs runs its aiobotocore client on fsspec's I/O loop, in a thread of its own, and registers a
finalizer that closes the client when the filesystem is garbage-collected. That finalizer
schedules the close on whichever asyncio loop is running in the collecting thread. batchgen's
own loop runs in the main thread, so a filesystem collected there (a writer, a mirror or a store
reader dropped after use) had its connections closed on the wrong loop, and an unrelated task of
the run failed with "attached to a different loop". Here the close always goes to the client's
own loop. s3fs loads only when a store is opened.

Every filesystem of a process also shares one botocore data loader: each new session otherwise
parses botocore's S3 service model and endpoint rules from JSON again (a few hundred ms of CPU),
and a run opens several stores (results, ledger copies, the reader). And one TLS context per
verify setting: aiobotocore builds a fresh one for each client, loading the whole CA bundle
(about 16 ms of CPU each), even for a plain-http endpoint that never uses it. A client with a
certificate of its own or behind a proxy still builds its own.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

__all__ = ["s3_filesystem"]


def s3_filesystem(**options: Any) -> Any:
    """An s3fs filesystem made with ``options``; ImportError without s3fs installed."""
    cls = _filesystem_class()
    if "session" not in options:
        options["session"] = _session()
    session_class = _http_session_class()
    if session_class is not None:
        options["config_kwargs"] = {"http_session_cls": session_class,
                                    **(options.get("config_kwargs") or {})}
    return cls(**options)


def _session() -> Any:
    """A fresh aiobotocore session (credentials and settings are per filesystem) on the shared loader."""
    from aiobotocore.session import AioSession

    session = AioSession()
    session.register_component("data_loader", _data_loader())
    return session


@functools.cache
def _data_loader() -> Any:
    """botocore's loader, made once: it caches every model it has parsed."""
    from botocore.loaders import create_loader

    return create_loader()


@functools.cache
def _http_session_class() -> type | None:
    """aiobotocore's HTTP session sharing the process's TLS contexts; None where this
    aiobotocore cannot be given a session class (it then builds its own, as before)."""
    import inspect

    from aiobotocore.config import AioConfig
    from aiobotocore.httpsession import AIOHTTPSession

    if "http_session_cls" not in inspect.signature(AioConfig.__init__).parameters:
        return None

    class SharedTLSSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore is untyped
        def _build_ssl_contexts(self, proxy_url: Any) -> Any:
            if proxy_url or getattr(self, "_cert_file", None):
                return super()._build_ssl_contexts(proxy_url)
            return _tls_context(self, self._verify), None

    return SharedTLSSession


_tls_lock = threading.Lock()
_tls_contexts: dict[Any, Any] = {}


def _tls_context(session: Any, verify: Any) -> Any:
    """The one context for ``verify`` (True, False or a CA bundle's path), made by the first
    session that needs it (clients build theirs in worker threads: hence the lock)."""
    with _tls_lock:
        context = _tls_contexts.get(verify)
        if context is None:
            context = _tls_contexts[verify] = session._build_verify_context()
        return context


@functools.cache
def _filesystem_class() -> type:
    import s3fs
    from fsspec.asyn import sync

    class S3FileSystem(s3fs.S3FileSystem):  # type: ignore[misc]  # s3fs is untyped
        """s3fs's filesystem with a finalizer that closes the client on the client's loop."""

        @staticmethod
        def close_session(loop: Any, s3: Any) -> None:
            if loop is not None and loop.is_running():
                try:
                    on_own_loop = asyncio.get_running_loop() is loop
                except RuntimeError:
                    on_own_loop = False
                if on_own_loop:  # collected inside fsspec's own loop: close there, later
                    loop.create_task(s3.__aexit__(None, None, None))
                    return
                try:
                    sync(loop, s3.__aexit__, None, None, None, timeout=0.1)
                    return
                except Exception:  # noqa: BLE001 - a finalizer: fall back to closing the socket
                    pass
            try:
                s3._client._endpoint.http_session._connector._close()
            except AttributeError:  # at interpreter exit it may be gone already
                pass

    return S3FileSystem
