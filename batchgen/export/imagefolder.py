"""Hugging Face ImageFolder: ``<split>/metadata.jsonl`` and the images in ``<split>/NNNN/``.

Each subfolder holds at most 1,000 images, named ``<job_id>.<ext>`` (unique, dot-free). Each
image is read and checked (its recorded sha256, or a decode when none is recorded) like the
other formats' bytes, then made a file of its own: a reflink of the batch's file where the
filesystem has them (no space used until one side changes), a plain copy otherwise. Never a
hard link unless ``--link`` asks for one (then read-only: an edit in place of the export
would otherwise change the paid original). From an object store the images are downloaded
many at a time. ``metadata.jsonl`` has one line per image: ``file_name`` and every column,
with the same keys on every line, so ``datasets`` builds one typed schema from it (and, with
a metadata file present, never invents a ``label`` column from the folder names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from batchgen.export.base import Layout, LayoutOptions, UnitRule, place, tmp_path
from batchgen.export.files import Copier
from batchgen.export.scan import Item

__all__ = ["FOLDER_SIZE", "ImageFolderWriter"]

FOLDER_SIZE = 1000


class ImageFolderWriter(Layout):
    name = "imagefolder"
    noun = "folder"
    loader = 'load_dataset("imagefolder", data_dir="{to}")'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._copier = Copier()
        self._metadata: Path | None = None
        self._meta_fh: Any = None

    @classmethod
    def unit_rule(cls, options: LayoutOptions) -> UnitRule:
        return lambda rows, _bytes, _next: rows >= FOLDER_SIZE

    @classmethod
    def data_files(cls, split: str) -> str:
        return f"{split}/**"

    @classmethod
    def file_pattern(cls, split: str) -> re.Pattern[str]:
        return re.compile(re.escape(split) + r"/(?:[0-9]{4,}|metadata\.jsonl)")

    def _folder(self, index: int) -> str:
        return f"{self.split}/{index:04d}"

    def unit_files(self, index: int, units: int) -> list[str]:
        return [self._folder(index)]

    @classmethod
    def owned(cls, root: Path, split: str) -> list[Path]:
        base = root / split
        found = sorted(p for p in base.glob("[0-9][0-9][0-9][0-9]*") if p.is_dir())
        meta = base / "metadata.jsonl"
        return found + ([meta] if meta.exists() else [])

    def write_unit(self, index: int, units: int, items: Iterable[Item]) -> int:
        folder = self.root / self._folder(index)
        folder.mkdir(parents=True, exist_ok=True)
        rows = list(items)  # at most FOLDER_SIZE rows (never their bytes)
        wanted = set()
        for item, data in self.images.checked(rows):
            if data is None:
                continue  # left out: the image source recorded which job and why
            name = f"{item.key}.{item.ext}"
            source = self.images.local_file(item)
            tmp = tmp_path(self.root)
            try:
                if self.options.link and source is not None:
                    how = self._copier.link(source, data, tmp)
                else:
                    how = self._copier.copy(source, data, tmp)
                os.replace(tmp, folder / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self.counts[how] += 1
            wanted.add(name)
        for item in rows:
            if f"{item.key}.{item.ext}" in wanted:
                self.keep_row(index, item)
        for stale in folder.iterdir():
            if stale.name not in wanted:
                stale.unlink()
        return len(wanted)

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
