"""Where the writers get an image's bytes: a local batch folder, or an object store.

``LocalImages`` reads one file after another (a local read is cheap, and an ImageFolder
hard-links instead); ``StoreImages`` fetches many objects at once through the batch's
``StoreBatch``, so ten thousand images are not ten thousand round trips in sequence. Either
way every image is checked against the sha256 the ledger recorded (or, with none recorded, must
decode as an image of its kind), and one that does not (or is gone) comes back as None: left
out of the export, its job and path recorded for the report.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from batchgen.export.files import read_no_follow
from batchgen.export.scan import Item, Omission, Omitted

if TYPE_CHECKING:
    from batchgen.storage.remote import StoreBatch

__all__ = ["ImageSource", "LocalImages", "StoreImages", "read_checked", "verdict"]

#: objects fetched together, at most (and at most FETCH_BYTES of them)
FETCH_COUNT = 128
FETCH_BYTES = 64 * 1024 * 1024


class ImageSource(Protocol):
    #: images downloaded so far, for the report (0 for a local folder)
    fetched: int
    #: every image ``checked`` left out so far, with its job and path
    omitted: list[Omitted]

    def local_file(self, item: Item) -> Path | None:
        """The image as a local file a copy can be made from, or None (it must be fetched)."""

    def checked(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes | None]]:
        """Each item with its bytes, in order; None (and an omission recorded) when missing,
        not the recorded sha256, or, with none recorded, not an image."""


def verdict(item: Item, data: bytes | None) -> Omission | None:
    """Why these bytes cannot be exported as the item's image, or None when they can."""
    if data is None:
        return Omission.NO_IMAGE
    if item.sha256:
        return None if hashlib.sha256(data).hexdigest() == item.sha256 else Omission.CHANGED
    return None if _decodes(data, item.ext) else Omission.UNREADABLE


def _decodes(data: bytes, ext: str) -> bool:
    """With no sha256 recorded, the bytes must at least decode as an image of their kind
    (Pillow, loaded only for such a record)."""
    import io

    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return True
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = (img.format or "").lower()
            img.verify()
    except Exception:  # noqa: BLE001 - any failure to decode means "not an image"
        return False
    return kind == {"jpg": "jpeg"}.get(ext.lower(), ext.lower())


def read_checked(item: Item) -> bytes | None:
    """The image's bytes, or None when they are not what the ledger recorded."""
    data = read_no_follow(Path(item.image))
    return data if verdict(item, data) is None else None


class LocalImages:
    """Images of a local batch folder, ``Item.image`` an absolute path (read without
    following a symlink)."""

    def __init__(self) -> None:
        self.fetched = 0
        self.omitted: list[Omitted] = []

    def local_file(self, item: Item) -> Path | None:
        return Path(item.image)

    def checked(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes | None]]:
        for item in items:
            data = read_no_follow(Path(item.image))
            why = verdict(item, data)
            if why is not None:
                self.omitted.append(Omitted(why, item.key, item.path))
                data = None
            yield item, data


class StoreImages:
    """Images of a batch in an object store, ``Item.image`` the path in the batch."""

    def __init__(self, store: StoreBatch) -> None:
        self.store = store
        self.fetched = 0
        self.omitted: list[Omitted] = []

    def local_file(self, item: Item) -> Path | None:
        return None

    def checked(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes | None]]:
        for group in _groups(items):
            got = self.store.read_many([item.image for item in group])
            self.fetched += sum(1 for data in got.values() if data is not None)
            for item in group:
                data = got.get(item.image)
                why = verdict(item, data)
                if why is not None:
                    self.omitted.append(Omitted(why, item.key, item.path))
                    data = None
                yield item, data


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
