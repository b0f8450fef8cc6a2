"""Parquet shards as the Hugging Face Hub lays them out: ``data/<split>-00000-of-0000N.parquet``.

The image is a ``{bytes, path}`` struct and the schema's ``huggingface`` metadata names it an
``Image`` feature, so ``datasets.load_dataset`` decodes it without being told. Shards stop
before 500 MB of images and row groups hold 100 rows, so a reader can seek to any hundred
images without loading a shard. pyarrow is an optional extra (``batchgen[parquet]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.export.base import Layout, LayoutOptions, UnitRule, hf_features, place, tmp_path
from batchgen.export.rows import ColumnType
from batchgen.export.scan import Item

__all__ = ["ROW_GROUP", "ParquetWriter"]

ROW_GROUP = 100


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - loads the submodule
    except ImportError:
        raise UsageError("the parquet format needs pyarrow: pip install 'batchgen[parquet]'") from None
    return pyarrow


class ParquetWriter(Layout):
    name = "parquet"
    loader = 'load_dataset("parquet", data_dir="{to}")'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pa = _pyarrow()
        pa = self.pa
        schema = self.schema
        types = {ColumnType.STRING: pa.string(), ColumnType.INT: pa.int64(),
                 ColumnType.FLOAT: pa.float64(), ColumnType.BOOL: pa.bool_()}
        fields = [pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))]
        fields += [pa.field(name, types[kind]) for name, kind in schema.items()]
        fields.append(pa.field("sidecar", pa.string()))
        features = hf_features(schema, "image")
        self.arrow_schema = pa.schema(fields, metadata={
            "huggingface": json.dumps({"info": {"features": features}})})

    @classmethod
    def unit_rule(cls, options: LayoutOptions) -> UnitRule:
        most = options.parquet_shard_bytes
        return lambda rows, size, nxt: rows > 0 and size + nxt > most

    @classmethod
    def data_files(cls, split: str) -> str:
        return f"data/{split}-*.parquet"

    @classmethod
    def file_pattern(cls, split: str) -> re.Pattern[str]:
        return re.compile(r"data/" + re.escape(split) + r"-[0-9]{5,}-of-[0-9]{5,}\.parquet")

    def unit_files(self, index: int, units: int) -> list[str]:
        return [f"data/{self.split}-{index:05d}-of-{units:05d}.parquet"]

    @classmethod
    def owned(cls, root: Path, split: str) -> list[Path]:
        return sorted((root / "data").glob(f"{split}-[0-9]*-of-[0-9]*.parquet"))

    def write_unit(self, index: int, units: int, items: Iterable[Item]) -> int:
        pq = self.pa.parquet
        (name,) = self.unit_files(index, units)
        tmp = tmp_path(self.root)
        written = 0
        try:
            # Statistics and dictionaries for the columns people filter on, not for the image
            # bytes and sidecar text (min/max of blobs would only grow the footer).
            with pq.ParquetWriter(tmp, self.arrow_schema, compression="zstd",
                                  write_statistics=list(self.schema),
                                  use_dictionary=[n for n, k in self.schema.items()
                                                  if k is ColumnType.STRING]) as writer:
                batch: list[dict[str, Any]] = []
                for item, data in self.images.checked(items):
                    if data is None:
                        continue
                    row = {"image": {"bytes": data, "path": f"{item.key}.{item.ext}"}}
                    row.update(item.row)
                    row["sidecar"] = item.sidecar
                    batch.append(row)
                    written += 1
                    if len(batch) == ROW_GROUP:
                        self._write(writer, batch)
                        batch = []
                if batch or not written:
                    self._write(writer, batch)
            place(self.root, tmp, name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def _write(self, writer: Any, rows: list[dict[str, Any]]) -> None:
        table = self.pa.Table.from_pylist(rows, schema=self.arrow_schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
