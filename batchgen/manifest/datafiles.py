"""Streaming readers for the value files a manifest names: .txt, .csv and .jsonl.

Each reader yields one value or row at a time with its 1-based line number, so a file of a
million prompts is never held in memory and every bad line can be named. A bad line is
yielded as a ``BadLine`` (the stream goes on), never raised. Readers never judge field values;
that is fields.py's job.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "BadLine", "count_records", "first_columns", "kind_of", "read_records"]

#: File suffix -> what one record is.
KINDS = {".txt": "text", ".csv": "csv", ".jsonl": "jsonl"}


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that cannot be used, and why (``col`` is 1-based, 0 if unknown)."""

    message: str
    col: int = 0


def kind_of(path: str) -> str | None:
    """"text", "csv" or "jsonl" from the file's suffix; None if we cannot read that kind."""
    return KINDS.get(Path(path).suffix.lower())


def _undecodable(number: int, raw: bytes, exc: UnicodeDecodeError) -> BadLine:
    byte = raw[exc.start:exc.start + 1].hex().upper()
    return BadLine(f"not UTF-8 text: byte 0x{byte} at line {number}, byte {exc.start + 1} "
                   "cannot be decoded; save the file as UTF-8", exc.start + 1)


def _lines(path: Path) -> Iterator[tuple[int, str | BadLine]]:
    """Decoded lines (line ending kept), line numbers from 1, a BOM on line 1 dropped."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, _undecodable(number, raw, exc)
                continue
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text


def _text(path: Path) -> Iterator[tuple[int, str | BadLine]]:
    for number, line in _lines(path):
        if isinstance(line, BadLine):
            yield number, line
        elif line.strip():
            yield number, line.strip()


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    for number, line in _lines(path):
        if isinstance(line, BadLine):
            yield number, line
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, BadLine(f"not valid JSON: {exc.msg}", exc.colno)
            continue
        if not isinstance(obj, dict):
            yield number, BadLine("each line must be one JSON object, like {\"prompt\": \"...\"}")
            continue
        yield number, obj


def _csv(path: Path) -> Iterator[tuple[int, dict[str, str] | BadLine]]:
    """CSV records as dicts keyed by the header; the header itself is not yielded."""
    bad: list[tuple[int, BadLine]] = []

    def feed() -> Iterator[str]:
        for number, line in _lines(path):
            if isinstance(line, BadLine):
                bad.append((number, line))
                yield "\n"
            else:
                yield line

    reader = csv.reader(feed(), strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield reader.line_num, BadLine(f"bad CSV: {exc}")
            continue
        if bad:
            number, problem = bad.pop(0)
            bad.clear()
            yield number, problem
            continue
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if header is None:
            header = [h.strip() for h in record]
            continue
        if len(record) != len(header):
            yield start, BadLine(f"row has {len(record)} values but the header has "
                                 f"{len(header)} columns")
            continue
        yield start, dict(zip(header, record))


_READERS = {"text": _text, "csv": _csv, "jsonl": _jsonl}


def read_records(path: Path, kind: str) -> Iterator[tuple[int, Any]]:
    """Stream (line number, value) pairs: a str for text, a dict for csv/jsonl, or a BadLine."""
    return _READERS[kind](path)


def first_columns(path: Path, kind: str) -> tuple[int, list[str] | BadLine | None]:
    """The column names of a csv (its header) or jsonl (keys of the first object) file.

    Returns the line they were found on; None when the file holds no record at all.
    """
    if kind == "csv":
        for number, line in _lines(path):
            if isinstance(line, BadLine):
                return number, line
            if line.strip():
                try:
                    row = next(csv.reader([line], strict=True))
                except csv.Error as exc:
                    return number, BadLine(f"bad CSV header: {exc}")
                return number, [h.strip() for h in row]
        return 0, None
    for number, obj in _jsonl(path):
        if isinstance(obj, BadLine):
            return number, obj
        return number, list(obj)
    return 0, None


def count_records(path: Path, kind: str) -> tuple[int, tuple[int, BadLine] | None]:
    """How many values/rows the file holds, and the first line that is not UTF-8 if any.

    Counting is a cheap streaming pass (bytes, not parsed rows), done at load so the size of
    the expansion is known before a job is made.
    """
    count = 0
    first_bad: tuple[int, BadLine] | None = None
    if kind == "csv":
        def text_lines() -> Iterator[str]:
            nonlocal first_bad
            for number, line in _lines(path):
                if isinstance(line, BadLine):
                    if first_bad is None:
                        first_bad = (number, line)
                    yield "\n"
                else:
                    yield line
        try:
            for record in csv.reader(text_lines()):
                if record and not (len(record) == 1 and not record[0].strip()):
                    count += 1
        except csv.Error:
            pass  # reported with its line by the full pass
        return max(count - 1, 0), first_bad
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if raw.isascii():
                count += bool(raw.strip())
                continue
            try:
                count += bool(raw.decode("utf-8").lstrip("\ufeff").strip())
            except UnicodeDecodeError as exc:
                count += 1
                if first_bad is None:
                    first_bad = (number, _undecodable(number, raw, exc))
    return count, first_bad
