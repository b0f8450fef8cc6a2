"""``export --to s3://bucket/prefix``: an export made locally, then put in an object store.

The export is written to a local working folder with every check of a local export (the
same scan, image checks, layouts, card), then each file is uploaded as one whole object
through the storage package's ``Store``, as runs write: a store makes an
object visible only when its upload completed, so no reader ever sees a partial shard. The
data files go first, then the card and the metadata, then the stale objects of this split go
(only names a layout gives its files, under the prefix), and the state object last. Between
two exports a reader may meet new shards beside old ones for as long as the uploads take;
an export cut short is finished by the same command (every object is uploaded again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchgen.export.card import CARD
from batchgen.export.state import batchgen_names, state_file

__all__ = ["fetch_card", "publish"]


def _store(url: str) -> Any:
    from batchgen.storage.store import Store  # fsspec only for a store

    return Store(url)


def fetch_card(url: str, local: Path) -> None:
    """The store's ``README.md`` into the working folder, so a licence set there is kept and
    a card batchgen did not write is left as it is."""
    store = _store(url)
    try:
        data = store.get(store.key(CARD))
    except FileNotFoundError:
        return
    (local / CARD).write_bytes(data)


def publish(local: Path, url: str, split: str, files: list[str]) -> tuple[int, int]:
    """Upload the export in ``local`` (its ``files``, the card, the state) to ``url``; returns
    (objects uploaded, stale objects removed)."""
    store = _store(url)
    allowed = batchgen_names(split)
    existing: set[str] = set()
    key = store.key(state_file(split))
    base = key.rpartition("/")[0]
    for path in store.call("list", base, store.fs.find, base):
        name = str(path)[len(base) + 1:] if str(path).startswith(base + "/") else ""
        if name:
            existing.add(name)
    order = [*_expand(local, files), *([CARD] if (local / CARD).is_file() else []),
             state_file(split)]
    for name in order[:-1]:
        store.call("upload", store.key(name), store.fs.put_file, str(local / name), store.key(name))
    removed = 0
    for name in sorted(existing - set(order)):
        if allowed(name) and store.remove(store.key(name)):
            removed += 1
    last = store.key(order[-1])
    store.call("upload", last, store.fs.put_file, str(local / order[-1]), last)
    return len(order), removed


def _expand(local: Path, files: list[str]) -> list[str]:
    """Every file an export's names cover (an ImageFolder unit is a folder of images)."""
    out = []
    for name in files:
        path = local / name
        if path.is_dir():
            out += sorted(p.relative_to(local).as_posix() for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            out.append(name)
    return out
