"""A local batch folder put into an object store as a run writing to ``s3://`` leaves it: the
files under ``images/`` at their paths, and each ledger copied by the run's own mirror
(``LedgerMirror.push``, under ``ledger/``). For the tests that read a batch back from a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchgen.storage.ledger import ledger_files
from batchgen.storage.mirror import LedgerMirror


def upload_batch(server: Any, folder: Path, url: str) -> list[str]:
    """Put ``folder``'s images and ledgers under ``url`` (of ``server``); returns the image keys."""
    root = url.removeprefix("s3://")
    images = [p for p in sorted((folder / "images").rglob("*")) if p.is_file()]
    keys = [f"{root}/{p.relative_to(folder).as_posix()}" for p in images]
    if images:
        server.filesystem().put([str(p) for p in images], keys)
    mirror = LedgerMirror(url, filesystem=server.filesystem())
    for ledger in ledger_files(folder):
        assert mirror.push(ledger, ledger.relative_to(folder).as_posix()), mirror.last_error
    return keys
