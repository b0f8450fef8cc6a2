"""Where the writers get an image's bytes: a local batch folder, or an object store.

``LocalImages`` reads one file after another (a local read is cheap, and an ImageFolder
hard-links instead); ``StoreImages`` fetches many objects at once through the batch's
``StoreBatch``, so ten thousand images are not ten thousand round trips in sequence. Either
way every image is checked against the sha256 the ledger recorded, and one that no longer
matches (or is gone) comes back as None: left out of the export and counted as changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from batchgen.export.scan import Item

if TYPE_CHECKING:
    from batchgen.storage.remote import StoreBatch

__all__ = ["ImageSource", "LocalImages", "StoreImages", "read_checked"]

#: objects fetched together, at most (and at most FETCH_BYTES of them)
FETCH_COUNT = 128
FETCH_BYTES = 64 * 1024 * 1024


class ImageSource(Protocol):
    #: images downloaded so far, for the report (0 for a local folder)
    fetched: int

    def local_file(self, item: Item) -> Path | None:
        """The image as a local file a copy can be made from, or None (it must be fetched)."""

    def checked(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes | None]]:
        """Each item with its bytes, in order; None when missing or not the recorded sha256."""


def read_checked(item: Item) -> bytes | None:
    """The image's bytes, or None when they no longer hash to what the ledger recorded."""
    try:
        with open(item.image, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return data if _matches(item, data) else None


def _matches(item: Item, data: bytes) -> bool:
    return not item.sha256 or hashlib.sha256(data).hexdigest() == item.sha256


class LocalImages:
    """Images of a local batch folder, ``Item.image`` an absolute path."""

    fetched = 0

    def local_file(self, item: Item) -> Path | None:
        return Path(item.image)

    def checked(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes | None]]:
        for item in items:
            yield item, read_checked(item)


class StoreImages:
    """Images of a batch in an object store, ``Item.image`` the path in the batch."""

    def __init__(self, store: StoreBatch) -> None:
        self.store = store
        self.fetched = 0

    def local_file(self, item: Item) -> Path | None:
        return None

    def checked(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes | None]]:
        for group in _groups(items):
            got = self.store.read_many([item.image for item in group])
            self.fetched += sum(1 for data in got.values() if data is not None)
            for item in group:
                data = got.get(item.image)
                yield item, data if data is not None and _matches(item, data) else None


def _groups(items: Iterable[Item]) -> Iterator[list[Item]]:
    """Runs of consecutive items of at most FETCH_COUNT images and FETCH_BYTES bytes."""
    it = iter(items)
    while True:
        group: list[Item] = []
        size = 0
        for item in it:
            group.append(item)
            size += item.size
            if len(group) >= FETCH_COUNT or size >= FETCH_BYTES:
                break
        if not group:
            return
        yield group
