"""WebDataset shards: ``<split>-000000.tar``, ... and ``__stats__/<split>-000000_stats.json``.

A sample is ``<job_id>.<image ext>``, ``<job_id>.json`` (the row: every column, the sidecar
as text) and, with captions, ``<job_id>.txt``. Keys are job ids, which hold no dot, so no
sample is split in two; every sample has the same members. Members are sorted by name, and
every header carries the same owner, mode and mtime, so the same rows always give the same
bytes (a shard can be checked by its digest, and an unchanged one is never rewritten). The
per-shard stats (img2dataset's fields, plus the shard's size and sha256) sit in ``__stats__/``,
a folder ``datasets`` skips, so ``load_dataset("webdataset", data_dir=...)`` sees only tars.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

import orjson

from batchgen.errors import UsageError
from batchgen.export.base import Layout, atomic_write, place, tmp_path, value_features
from batchgen.export.scan import Item, Scan

__all__ = ["FIXED_MTIME", "WebDatasetWriter"]

#: 2000-01-01T00:00:00Z: the same in every shard, so shards depend on their rows alone
FIXED_MTIME = 946_684_800


class WebDatasetWriter(Layout):
    name = "webdataset"
    loader = 'load_dataset("webdataset", data_dir="{to}")'
    sorted_keys = True

    @classmethod
    def check(cls, found: Scan) -> None:
        formats = found.columns.formats
        if len(formats) > 1:
            raise UsageError(f"this batch holds {', '.join(sorted(formats))} images; a WebDataset "
                             f"sample has the same members everywhere, so export one format at "
                             f"a time, e.g. --where output_format={sorted(formats)[0]}")

    @classmethod
    def data_files(cls, split: str) -> str:
        return f"{split}-*.tar"

    def card_features(self, formats: set[str]) -> list[dict[str, object]]:
        """A sample's members as ``datasets`` reads a tar: key, URL, the row, image, caption."""
        members: list[dict[str, object]] = [
            {"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
            {"name": "json", "struct": value_features(self.schema)}]
        members += [{"name": ext, "dtype": "image"} for ext in sorted(formats)]
        if self.captions:
            members.append({"name": "txt", "dtype": "string"})
        return members

    @classmethod
    def file_pattern(cls, split: str) -> re.Pattern[str]:
        name = re.escape(split) + r"-[0-9]{6,}"
        return re.compile(rf"{name}\.tar|__stats__/{name}_stats\.json")

    def _name(self, index: int) -> str:
        return f"{self.split}-{index:06d}"

    def unit_files(self, index: int, units: int) -> list[str]:
        name = self._name(index)
        return [f"{name}.tar", f"__stats__/{name}_stats.json"]

    @classmethod
    def owned(cls, root: Path, split: str) -> list[Path]:
        return sorted([*root.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"),
                       *root.glob(f"__stats__/{split}-[0-9][0-9][0-9][0-9][0-9][0-9]_stats.json")])

    def _member(self, tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = FIXED_MTIME
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))

    def write_unit(self, index: int, units: int, items: Iterable[Item]) -> int:
        tar_name, stats_name = self.unit_files(index, units)
        tmp = tmp_path(self.root)
        count = written = 0
        first = last = None
        try:
            with open(tmp, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                    # sorted by key: every member in name order
                    for item, data in self.images.checked(items):
                        count += 1
                        if data is None:
                            continue
                        members = [(f"{item.key}.json", self._json(item)),
                                   (f"{item.key}.{item.ext}", data)]
                        if self.captions:
                            members.append((f"{item.key}.txt", (item.caption or "").encode()))
                        for name, content in sorted(members):
                            self._member(tar, name, content)
                        written += 1
                        first = first or item.key
                        last = item.key
            digest = _file_sha256(tmp)
            place(self.root, tmp, tar_name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        changed = count - written
        stats = {"count": count, "successes": written, "failed_to_download": 0,
                 "failed_to_resize": 0, "changed_on_disk": changed,
                 "status_dict": {"success": written, **({"changed_on_disk": changed} if changed else {})},
                 "first_key": first, "last_key": last,
                 "bytes": (self.root / tar_name).stat().st_size, "sha256": digest}
        atomic_write(self.root, stats_name,
                     orjson.dumps(stats, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return written

    def _json(self, item: Item) -> bytes:
        row = {key: item.row.get(key) for key in self.schema}
        row["sidecar"] = item.sidecar
        return orjson.dumps(row)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
