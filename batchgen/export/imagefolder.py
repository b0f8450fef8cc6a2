"""Hugging Face ImageFolder: ``<split>/metadata.jsonl`` and the images in ``<split>/NNNN/``.

Each subfolder holds at most 1,000 images, named ``<job_id>.<ext>`` (unique, dot-free), hard
linked to the batch's files where the filesystem allows (no bytes copied, no space used) and
copied otherwise. Images are not read: their size was checked by the scan, and their sha256
is a column, where the other formats, which copy the bytes, check it. From an object store
the images are downloaded (many at a time) and checked against their sha256 like the other
formats' bytes; one already in the export folder with the same bytes is not fetched again. ``metadata.jsonl`` has one line per image: ``file_name`` and every column,
with the same keys on every line, so ``datasets`` builds one typed schema from it (and, with
a metadata file present, never invents a ``label`` column from the folder names).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from batchgen.export.base import Layout, LayoutOptions, UnitRule, atomic_write, place, tmp_path
from batchgen.export.scan import Item

__all__ = ["FOLDER_SIZE", "ImageFolderWriter"]

FOLDER_SIZE = 1000


class ImageFolderWriter(Layout):
    name = "imagefolder"
    noun = "folder"
    loader = 'load_dataset("imagefolder", data_dir="{to}")'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._can_link = True
        self._metadata: Path | None = None
        self._meta_fh: Any = None

    @classmethod
    def unit_rule(cls, options: LayoutOptions) -> UnitRule:
        return lambda rows, _bytes, _next: rows >= FOLDER_SIZE

    @classmethod
    def file_pattern(cls, split: str) -> re.Pattern[str]:
        return re.compile(re.escape(split) + r"/(?:[0-9]{4,}|metadata\.jsonl)")

    def _folder(self, index: int) -> str:
        return f"{self.split}/{index:04d}"

    def unit_files(self, index: int, units: int) -> list[str]:
        return [self._folder(index)]

    def owned(self) -> list[Path]:
        base = self.root / self.split
        found = sorted(p for p in base.glob("[0-9][0-9][0-9][0-9]*") if p.is_dir())
        meta = base / "metadata.jsonl"
        return found + ([meta] if meta.exists() else [])

    def write_unit(self, index: int, units: int, items: Iterable[Item]) -> int:
        folder = self.root / self._folder(index)
        folder.mkdir(parents=True, exist_ok=True)
        rows = list(items)  # at most FOLDER_SIZE rows (never their bytes)
        if any(self.images.local_file(item) is None for item in rows):
            return self._fetch_unit(index, folder, rows)
        wanted = set()
        for item in rows:
            name = f"{item.key}.{item.ext}"
            target = folder / name
            source = self.images.local_file(item)
            assert source is not None
            try:
                same = target.exists() and os.path.samefile(source, target)
            except OSError:
                same = False
            if not same:
                try:
                    self._link(source, target)
                except FileNotFoundError:
                    continue  # gone since the scan: left out, and counted as changed
            wanted.add(name)
            self.keep_row(index, item)
        for stale in folder.iterdir():
            if stale.name not in wanted:
                stale.unlink()
        return len(wanted)

    def _fetch_unit(self, index: int, folder: Path, rows: list[Item]) -> int:
        """A unit from the store: at most FOLDER_SIZE rows, so they are held (never bytes)."""
        fetch = [item for item in rows if not _holds(folder / f"{item.key}.{item.ext}", item)]
        missing = set()
        for item, data in self.images.checked(fetch):
            if data is None:
                missing.add(item.key)  # gone or changed since the scan: counted as changed
                continue
            atomic_write(self.root, f"{self._folder(index)}/{item.key}.{item.ext}", data)
        wanted = set()
        for item in rows:
            if item.key not in missing:
                wanted.add(f"{item.key}.{item.ext}")
                self.keep_row(index, item)
        for stale in folder.iterdir():
            if stale.name not in wanted:
                stale.unlink()
        return len(wanted)

    def _link(self, source: Path, target: Path) -> None:
        tmp = tmp_path(self.root)
        if self._can_link:
            try:
                os.link(source, tmp)
                os.replace(tmp, target)
                self.counts["hard-linked"] += 1
                return
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                     errno.EACCES):
                    raise
                self._can_link = False  # another filesystem: copy from now on
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.counts["copied"] += 1

    def begin(self) -> None:
        self._metadata = tmp_path(self.root)
        self._meta_fh = open(self._metadata, "wb")

    def keep_row(self, index: int, item: Item) -> None:
        """Every row, of a unit written now or kept, is a line of ``metadata.jsonl``."""
        assert self._meta_fh is not None
        row = {"file_name": f"{index:04d}/{item.key}.{item.ext}"}
        row.update((k, item.row.get(k)) for k in self.schema)
        row["sidecar"] = item.sidecar
        self._meta_fh.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))

    def finish(self, ok: bool) -> list[str]:
        """Put ``metadata.jsonl`` in place (only once every unit is); returns it, relative."""
        if self._meta_fh is None or self._metadata is None:
            return []
        self._meta_fh.close()
        self._meta_fh = None
        if not ok:
            self._metadata.unlink(missing_ok=True)
            return []
        name = f"{self.split}/metadata.jsonl"
        place(self.root, self._metadata, name)
        return [name]


def _holds(target: Path, item: Item) -> bool:
    """True when the export folder already has this image, byte for byte."""
    try:
        if target.stat().st_size != item.size:
            return False
        return hashlib.sha256(target.read_bytes()).hexdigest() == item.sha256
    except OSError:
        return False
