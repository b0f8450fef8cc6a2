"""Matrix axes at run time: re-iterable sources of values, one fresh iterator per pass.

An axis yields ``(assign, record)`` pairs: the names it sets for a cell (request fields and
template variables) and what the job's ``axes`` record shows. Values from data files are
checked as they stream and a bad one is yielded as a Problem located in that file. An axis
never holds a data file or a range in memory, and never knows about the other axes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from batchgen.manifest.datafiles import BadLine, read_records
from batchgen.errors import Problem
from batchgen.manifest.fields import FIELD_CHECKS, check_scale, describe, from_text
from batchgen.manifest.source import YamlPath

__all__ = ["NO_LORAS", "RESERVED", "Axis", "Entry", "ListAxis", "LoraSet", "RandomAxis",
           "RangeAxis", "RowFileAxis", "TextFileAxis", "lora_label", "scalar", "stem"]

Entry = tuple[dict[str, Any], dict[str, Any]]
#: Template fields batchgen fills in itself; no axis or variable may take these names.
RESERVED = ("job_id", "index", "replica", "name")
#: An inner file axis smaller than this is read once per pass instead of once per outer value.
_SMALL_FILE = 256 * 1024


@dataclass(frozen=True, slots=True)
class LoraSet:
    """One resolved LoRA set: label for display and file names, name for exclude, the items.

    A scale may be the name of a variable (``scale: "{style_scale}"``, held as that text):
    each job then takes the scale from its own value of the variable (``resolve``), so two
    LoRAs' scales can be two axes of a sweep.
    """

    label: str
    name: str
    items: tuple[tuple[str, float | str], ...]
    named: bool = False

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables this set's scales are taken from (none for a set of numbers)."""
        return tuple(s for _, s in self.items if isinstance(s, str))

    def resolve(self, values: dict[str, Any]) -> LoraSet:
        """The set with every variable scale replaced by its value in ``values``; a missing
        or out-of-range value raises ValueError saying which."""
        items = []
        for path, scale in self.items:
            if isinstance(scale, str):
                if scale not in values:
                    raise ValueError(f"the scale of {stem(path)} takes {{{scale}}}, "
                                     f"which this job has no value for")
                value = values[scale]
                if isinstance(value, str):  # from a text file: "0.5"
                    try:
                        value = float(value.strip())
                    except ValueError:
                        pass
                try:
                    scale = check_scale(value)
                except ValueError as exc:
                    raise ValueError(f"{{{scale}}} as the scale of {stem(path)}: {exc}") from None
            items.append((path, scale))
        return LoraSet(lora_label(items, self.name if self.named else None), self.name,
                       tuple(items), self.named)

    def as_request(self) -> list[dict[str, Any]]:
        """The submit body's `loras` value (a fresh list: jobs must not share mutable state)."""
        return [{"path": p, "scale": s} for p, s in self.items]

    def __format__(self, spec: str) -> str:
        return format(self.label, spec)

    def __str__(self) -> str:
        return self.label


NO_LORAS = LoraSet("none", "none", ())


def _num(x: float | str) -> str:
    if isinstance(x, str):
        return f"{{{x}}}"  # a scale taken from a variable
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def stem(path: str) -> str:
    local = urlsplit(path).path if "://" in path else path
    return PurePosixPath(local.rstrip("/")).stem or "lora"


def lora_label(items: Iterable[tuple[str, float | str]], name: str | None = None) -> str:
    """`none`; `stem@scale+stem@scale` per LoRA; or `name@scale[+scale...]` for a named set."""
    items = list(items)
    if not items:
        return name or "none"
    if name:
        return f"{name}@" + "+".join(_num(s) for _, s in items)
    return "+".join(f"{stem(p)}@{_num(s)}" for p, s in items)


class Axis:
    """One matrix axis: its name, the names it sets, its size, and a fresh iterator per pass."""

    kind = "values"

    def __init__(self, name: str, path: YamlPath, sets: tuple[str, ...], size: int,
                 description: str) -> None:
        self.name = name
        self.path = path
        self.sets = sets
        self.size = size
        self.description = description
        self.file: Path | None = None

    def __iter__(self) -> Iterator[Entry | Problem]:  # pragma: no cover - abstract
        raise NotImplementedError

    def plain_values(self) -> Iterable[Any] | None:
        """A fresh pass over the values, for an axis each of whose entries sets only its own
        name and records just that (``({name: v}, {name: v})``) and never fails; None for any
        other axis. The counting pass takes an innermost axis like this value by value."""
        return None

    def for_pass(self, inner: bool) -> Iterable[Entry | Problem]:
        """What to iterate in one pass; a small inner file is read once instead of per outer value."""
        try:
            small = inner and self.file is not None and self.file.stat().st_size <= _SMALL_FILE
        except OSError:
            small = False  # reported by the pass itself, at the file
        return list(self) if small else self


class ListAxis(Axis):
    """Values written in the manifest (lists, inline rows, zip, LoRA sets), checked at load."""

    def __init__(self, name: str, path: YamlPath, sets: tuple[str, ...], entries: list[Entry],
                 description: str, kind: str = "values") -> None:
        super().__init__(name, path, sets, len(entries), description)
        self.entries = entries
        self.kind = kind
        self._plain: list[Any] | None = None
        if sets == (name,) and all(len(a) == 1 and name in a and r == a for a, r in entries):
            self._plain = [a[name] for a, _ in entries]

    def __iter__(self) -> Iterator[Entry | Problem]:
        return iter(self.entries)

    def plain_values(self) -> Iterable[Any] | None:
        return self._plain


class RangeAxis(Axis):
    """`{from, to, step}`, computed value by value: a range of a million costs nothing to hold."""

    kind = "range"

    def __init__(self, name: str, path: YamlPath, start: float, step: float, count: int,
                 as_int: bool, description: str) -> None:
        super().__init__(name, path, (name,), count, description)
        self.start, self.step, self.as_int = start, step, as_int

    def __iter__(self) -> Iterator[Entry | Problem]:
        name, start, step = self.name, self.start, self.step
        for i in range(self.size):
            value = start + i * step if self.as_int else round(start + i * step, 10)
            entry = {name: value}
            yield entry, entry

    def plain_values(self) -> Iterable[Any] | None:
        start, step = self.start, self.step
        if self.as_int:
            return range(start, start + self.size * step, step)  # type: ignore[arg-type]
        return (round(start + i * step, 10) for i in range(self.size))


class RandomAxis(Axis):
    """`{random: N, base: B}`: N seeds from random.Random(B), the same on every machine."""

    kind = "random"

    def __init__(self, name: str, path: YamlPath, count: int, base: int, description: str) -> None:
        super().__init__(name, path, (name,), count, description)
        self.base = base

    def __iter__(self) -> Iterator[Entry | Problem]:
        bits = random.Random(self.base).getrandbits
        name = self.name
        for _ in range(self.size):
            entry = {name: bits(31)}  # uniform in [0, 2147483647]
            yield entry, entry

    def plain_values(self) -> Iterable[Any] | None:
        bits = random.Random(self.base).getrandbits
        return (bits(31) for _ in range(self.size))


def _guarded(file: Path, kind: str, shown: str, axis: str) -> Iterator[tuple[int, Any]]:
    """Records of a data file; a file that vanished or cannot be read ends as a Problem."""
    try:
        yield from read_records(file, kind)
    except OSError as exc:
        yield 0, Problem(shown, 0, 0, axis, f"cannot read: {exc.strerror or exc}")


class TextFileAxis(Axis):
    """A .txt file, one literal value per non-blank line, streamed."""

    kind = "file"

    def __init__(self, name: str, path: YamlPath, file: Path, shown: str, rel: str, size: int,
                 description: str) -> None:
        super().__init__(name, path, (name,), size, description)
        self.file, self.shown, self.rel = file, shown, rel

    def __iter__(self) -> Iterator[Entry | Problem]:
        name, source_key, rel = self.name, f"{self.name}_source", self.rel
        convert = (lambda text: from_text(name, text)) if name in FIELD_CHECKS else None
        for number, text in _guarded(self.file, "text", self.shown, name):
            if isinstance(text, Problem):
                yield text
                return
            if isinstance(text, BadLine):
                yield Problem(self.shown, number, text.col, name, text.message)
                continue
            value: Any = text
            if convert is not None:
                try:
                    value = convert(text)
                except ValueError as exc:
                    yield Problem(self.shown, number, 0, name, str(exc))
                    continue
            yield {name: value}, {name: value, source_key: f"{rel}:{number}"}


class RowFileAxis(Axis):
    """A .csv or .jsonl file of rows, streamed; each row sets all its columns at once."""

    kind = "rows"

    def __init__(self, name: str, path: YamlPath, file: Path, shown: str, rel: str, fmt: str,
                 columns: list[str], size: int, description: str) -> None:
        super().__init__(name, path, tuple(columns), size, description)
        self.file, self.shown, self.rel, self.fmt, self.columns = file, shown, rel, fmt, columns

    def _checks(self) -> dict[str, Callable[[Any], Any] | None]:
        checks: dict[str, Callable[[Any], Any] | None] = {}
        for col in self.columns:
            if col in FIELD_CHECKS:
                checks[col] = ((lambda v, c=col: from_text(c, v)) if self.fmt == "csv"
                               else FIELD_CHECKS[col])
            else:
                checks[col] = None if self.fmt == "csv" else scalar
        return checks

    def __iter__(self) -> Iterator[Entry | Problem]:
        checks = self._checks()
        columns, ncols = self.columns, len(self.columns)
        name, source_key, rel, shown = self.name, f"{self.name}_source", self.rel, self.shown
        for number, row in _guarded(self.file, self.fmt, self.shown, name):
            if isinstance(row, Problem):
                yield row
                return
            if isinstance(row, BadLine):
                yield Problem(shown, number, row.col, name, row.message)
                continue
            if len(row) != ncols or any(c not in row for c in columns):
                missing = [c for c in columns if c not in row]
                extra = [k for k in row if k not in checks]
                what = (f"missing {', '.join(missing)}" if missing else "") + \
                    ("; " if missing and extra else "") + (f"unexpected {', '.join(extra)}" if extra else "")
                yield Problem(shown, number, 0, name,
                              f"row keys differ from the first row's ({what}); "
                              "every row needs the same keys")
                continue
            assign: dict[str, Any] = {}
            bad = None
            for col, check in checks.items():
                value = row[col]
                if check is not None:
                    if value == "" and col not in ("prompt",) and self.fmt == "csv":
                        continue  # an empty cell leaves the field at its top-level value
                    try:
                        value = check(value)
                    except ValueError as exc:
                        bad = Problem(shown, number, 0, f"{name}.{col}", str(exc))
                        break
                assign[col] = value
            if bad is not None:
                yield bad
                continue
            yield assign, {name: row, source_key: f"{rel}:{number}"}


def scalar(value: Any) -> Any:
    """A template variable holds text, a number or a boolean: something `{name}` can print."""
    if value is None or isinstance(value, (list, dict)):
        raise ValueError(f"must be text, a number or true/false (got {describe(value)})")
    return value
