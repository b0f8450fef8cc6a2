"""One flat row per done job, with columns whose types never change between rows.

A trainer filters on provenance (prompt, seed, LoRA scale, axis values), so every row carries
it as plain columns: the fixed ones below, one path and one scale column per LoRA slot, and
one column per axis value (a row axis gives one per key, ``<axis>_<key>``). Types are decided
by a first pass over every exported row (``Columns.learn``), so a column is the same type in
the first row and the millionth: whole numbers stay integers, a mix of whole and decimal
numbers is a float, and anything mixed with text is text. The full sidecar travels along as
one JSON text column, for what is not flat.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from batchgen.errors import UsageError
from batchgen.storage.sidecar import Sidecar

__all__ = ["FIXED", "ColumnType", "Columns", "Where", "flat_row"]


class ColumnType(StrEnum):
    """A column's type; the value is the Hugging Face ``Value`` dtype."""

    STRING = "string"
    INT = "int64"
    FLOAT = "float64"
    BOOL = "bool"


#: Columns every export has, in order (``text`` only when captions are on, LoRA slots after).
FIXED: dict[str, ColumnType] = {
    "job_id": ColumnType.STRING, "task_id": ColumnType.STRING, "prompt": ColumnType.STRING,
    "text": ColumnType.STRING, "seed": ColumnType.INT, "width": ColumnType.INT,
    "height": ColumnType.INT, "output_format": ColumnType.STRING, "loras": ColumnType.STRING,
    "sha256": ColumnType.STRING,
}
#: Axis keys the fixed columns already hold (the request's own value is exported instead).
_COVERED = {"seed", "output_format", "loras"}
#: Names the exporters use themselves: an axis of that name gets an ``axis_`` prefix.
_TAKEN = set(FIXED) | {"image", "file_name", "sidecar", "__key__", "__url__", "nsfw_valid",
                       "nsfw_confidence"}


def _kind(value: Any) -> ColumnType | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return ColumnType.BOOL
    if isinstance(value, int):
        return ColumnType.INT
    if isinstance(value, float):
        return ColumnType.FLOAT
    return ColumnType.STRING


def _merge(a: ColumnType | None, b: ColumnType | None) -> ColumnType | None:
    if a is None or a == b:
        return b if a is None else a
    if b is None:
        return a
    if {a, b} == {ColumnType.INT, ColumnType.FLOAT}:
        return ColumnType.FLOAT
    return ColumnType.STRING


def _axis_columns(axes: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    for key, value in axes.items():
        if key in _COVERED:
            continue
        if key == "prompt":  # the axis holds what was written (a template); the request the text
            yield "prompt_template", value
        elif isinstance(value, dict):
            for sub, item in value.items():
                yield f"{key}_{sub}", item
        else:
            yield (f"axis_{key}" if key in _TAKEN else key), value


def flat_row(sidecar: Sidecar) -> dict[str, Any]:
    """The row of one job, before it is fitted to the columns (``Columns.fit``)."""
    request = sidecar.request
    loras = request.get("loras") or []
    row: dict[str, Any] = {
        "job_id": sidecar.job_id, "task_id": sidecar.task_id, "prompt": request.get("prompt", ""),
        "text": sidecar.caption, "seed": sidecar.seed, "width": sidecar.image.width,
        "height": sidecar.image.height,
        "output_format": sidecar.image.format or request.get("output_format", ""),
        "loras": sidecar.axes.get("loras") if isinstance(sidecar.axes.get("loras"), str)
        else _label(loras),
        "sha256": sidecar.image.sha256,
    }
    if sidecar.nsfw is not None:  # the provider's flags, as it reports them
        row["nsfw_valid"] = sidecar.nsfw.get("valid")
        row["nsfw_confidence"] = sidecar.nsfw.get("confidence")
    for i, item in enumerate(loras, 1):
        if isinstance(item, dict):
            row[f"lora_{i}_path"] = item.get("path")
            row[f"lora_{i}_scale"] = item.get("scale")
    for key, value in _axis_columns(sidecar.axes):
        row.setdefault(key, value)
    return row


def _label(loras: list[Any]) -> str:
    from batchgen.manifest.axes import lora_label

    items = [(str(i.get("path", "")), float(i.get("scale", 1))) for i in loras if isinstance(i, dict)]
    return lora_label(items)


class Columns:
    """The export's columns and their types, learnt from every row before the first is written."""

    def __init__(self) -> None:
        self.types: dict[str, ColumnType | None] = {}
        self.captions = False
        self.formats: set[str] = set()

    def learn(self, row: dict[str, Any]) -> None:
        types = self.types
        for key, value in row.items():
            if key in FIXED:
                continue
            types[key] = _merge(types.get(key), _kind(value))
        if row.get("text") is not None:
            self.captions = True
        self.formats.add(str(row["output_format"]))

    def schema(self) -> dict[str, ColumnType]:
        """Column name -> type, in the order the files show them."""
        out = {k: t for k, t in FIXED.items() if k != "text" or self.captions}
        slots = sorted({int(k.split("_")[1]) for k in self.types if _is_slot(k)})
        for i in slots:
            out[f"lora_{i}_path"] = ColumnType.STRING
            out[f"lora_{i}_scale"] = ColumnType.FLOAT
        for key, kind in self.types.items():
            if not _is_slot(key):
                out[key] = kind or ColumnType.STRING  # a column only ever null: text
        return out

    def fit(self, row: dict[str, Any], schema: dict[str, ColumnType]) -> dict[str, Any]:
        """The row with every column of the schema, each value of the column's type."""
        return {key: _cast(row.get(key), kind) for key, kind in schema.items()}


def _is_slot(key: str) -> bool:
    parts = key.split("_")
    return len(parts) == 3 and parts[0] == "lora" and parts[1].isdigit() and parts[2] in ("path", "scale")


def _cast(value: Any, kind: ColumnType) -> Any:
    if value is None:
        return None
    if kind is ColumnType.STRING:
        if isinstance(value, str):
            return value
        return orjson.dumps(value).decode()  # 1 -> "1", True -> "true": JSON's own spelling
    if kind is ColumnType.FLOAT:
        return float(value)
    return value


@dataclass(frozen=True)
class Where:
    """``--where AXIS=VALUE`` filters: every named column must match one of its values."""

    wanted: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, items: Iterable[str]) -> Where:
        wanted: dict[str, list[str]] = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--where {item!r}: write AXIS=VALUE, like --where style=oil")
            wanted.setdefault(key.strip(), []).append(value)
        return cls({k: tuple(v) for k, v in wanted.items()})

    def __bool__(self) -> bool:
        return bool(self.wanted)

    def describe(self) -> list[str]:
        """``["loras=a|b", "subject=red"]``: one entry per column, its values sorted."""
        return [f"{k}={'|'.join(sorted(set(values)))}" for k, values in sorted(self.wanted.items())]

    def matches(self, row: dict[str, Any]) -> bool:
        for key, values in self.wanted.items():
            have = row.get(key)
            if not any(_same(have, want) for want in values):
                return False
        return True


def _same(have: Any, want: str) -> bool:
    if have is None:
        return want == ""
    if isinstance(have, str):
        return have == want
    if isinstance(have, bool):
        return want.lower() == str(have).lower()
    try:
        return float(want) == float(have)
    except (TypeError, ValueError):
        return str(have) == want
