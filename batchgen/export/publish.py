"""``export --to s3://bucket/prefix``: an export made locally, then put in an object store.

The export is written to a local working folder with every check of a local export (the
same scan, image checks, layouts, card), then each file is uploaded as one whole object
through the storage package's store layer (``open_store``, as runs write): a store makes an
object visible only when its upload completed, so no reader ever sees a partial shard. The
data files go first, then the card and the metadata, then the stale objects of this split go
(only names a layout gives its files, under the prefix), and the state object last. Between
two exports a reader may meet new shards beside old ones for as long as the uploads take;
an export cut short is finished by the same command (every object is uploaded again).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchgen.errors import OutputError
from batchgen.export.card import CARD
from batchgen.export.state import batchgen_names, state_file

__all__ = ["fetch_card", "publish"]


def fetch_card(url: str, local: Path) -> None:
    """The store's ``README.md`` into the working folder, so a licence set there is kept and
    a card batchgen did not write is left as it is."""
    from batchgen.storage.objectstore import open_store

    url, _, fs, root = open_store(url)
    try:
        fs.get_file(f"{root}/{CARD}", str(local / CARD))
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
        raise OutputError(f"export to {url}: could not read {CARD} ({type(exc).__name__}: "
                          f"{exc}); check the AWS_* variables and that the bucket exists") from exc


def publish(local: Path, url: str, split: str, files: list[str]) -> tuple[int, int]:
    """Upload the export in ``local`` (its ``files``, the card, the state) to ``url``; returns
    (objects uploaded, stale objects removed)."""
    from batchgen.storage.objectstore import open_store  # fsspec only for a store

    url, _, fs, root = open_store(url)
    allowed = batchgen_names(split)
    existing = _listing(fs, root)
    order = [*_expand(local, files), *([CARD] if (local / CARD).is_file() else []),
             state_file(split)]
    for name in order[:-1]:
        _call(f"upload {name}", url, fs.put_file, str(local / name), f"{root}/{name}")
    removed = 0
    for name in sorted(set(existing) - set(order)):
        if allowed(name):
            _call(f"remove {name}", url, fs.rm_file, f"{root}/{name}")
            removed += 1
    _call(f"upload {order[-1]}", url, fs.put_file, str(local / order[-1]), f"{root}/{order[-1]}")
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


def _listing(fs: Any, root: str) -> dict[str, int]:
    """Every object under the prefix by its name relative to it, with its size."""
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
        raise OutputError(f"cannot list {root}: {exc}") from exc
    out = {}
    for key, info in found.items():
        name = key[len(root):].lstrip("/") if key.startswith(root) else None
        if name:
            out[name] = int(info.get("size") or 0)
    return out


def _call(what: str, url: str, func: Callable[..., Any], *args: Any) -> Any:
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001 - the store client's errors are its own tree
        raise OutputError(f"export to {url}: could not {what} ({type(exc).__name__}: {exc}); "
                          f"check the AWS_* variables and that the bucket exists and is writable; "
                          f"the same command finishes the export") from exc

