"""Checking what is written under `matrix:` (and LoRA sets anywhere) and making Axis objects.

Every manifest-written value is validated here, once, at its YAML position, so expansion never
re-checks it per job; a data file is only opened to count its records and read its header.
It never expands the matrix and never decides how axes combine (that is combos.py and expand.py).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ValidationError

from batchgen.manifest.axes import (RESERVED, Axis, Entry, ListAxis, LoraSet, RandomAxis, RangeAxis,
                           RowFileAxis, TextFileAxis, lora_label, scalar, stem)
from batchgen.manifest.datafiles import BadLine, count_records, first_columns, kind_of
from batchgen.errors import Problem
from batchgen.job import IDENTIFIER
from batchgen.manifest.fields import (FIELD_CHECKS, MAX_LORAS, REQUEST_FIELDS, SCALE_MAX, TEMPLATED_FIELDS,
                             check_scale, describe, did_you_mean, excerpt)
from batchgen.manifest.schema import (SECRET_KEYS, DynamicSpec, FileSpec, LoraItem, NamedLoraSet,
                                     RandomSpec, RangeSpec, ZipSpec, check_url_template,
                                     validation_problems)
from batchgen.manifest.templates import Template
from batchgen.manifest.source import Source, YamlPath

__all__ = ["AxisBuilder"]

_SCALE_VARIABLE = re.compile(r"\{\s*(" + IDENTIFIER.pattern + r")\s*\}")


def _preview(values: Iterable[Any], limit: int = 60) -> str:
    """`oil, watercolor, ...`: the first values of a list axis, short enough for one line."""
    out = ""
    for value in values:
        text = str(value)
        text = text if len(text) <= 24 else text[:21] + "..."
        if out and len(out) + len(text) > limit:
            return out + ", ..."
        out = f"{out}, {text}" if out else text
    return out


class AxisBuilder:
    """Turns the raw `matrix:` mapping into Axis objects, collecting every problem it finds."""

    def __init__(self, src: Source, base_dir: Path, shown_dir: Path, model_takes_loras: bool,
                 limit: int, problems: list[Problem], templates: list[tuple[YamlPath, Template]]) -> None:
        self.src = src
        self.base_dir = base_dir
        self.shown_dir = shown_dir
        self.model_takes_loras = model_takes_loras
        self.limit = limit
        self.problems = problems
        #: every manifest-written template, with where it is, for the field check after load
        self.templates = templates
        #: variables LoRA scales are taken from, with where each is named (checked after load)
        self.scale_variables: list[tuple[str, YamlPath]] = []

    def fail(self, path: YamlPath, message: str, *, key: bool = False) -> None:
        self.problems.append(self.src.problem(path, message, key=key))

    # ---- single values ---------------------------------------------------------------

    def value(self, name: str, raw: Any, path: YamlPath) -> tuple[bool, Any]:
        """Check one manifest-written value for ``name``; templates for templated fields."""
        try:
            if name in ("image_url", "mask"):
                value = check_url_template(raw)
            elif name in FIELD_CHECKS:
                value = FIELD_CHECKS[name](raw)
            else:
                return True, scalar(raw)
            if name in TEMPLATED_FIELDS and ("{" in value or "}" in value):
                tmpl = Template(value, path)
                self.templates.append((path, tmpl))
                return True, tmpl
            return True, value
        except ValueError as exc:
            self.fail(path, str(exc))
            return False, None

    # ---- LoRA sets -------------------------------------------------------------------

    def lora_sets(self, raw: Any, path: YamlPath, *, fixed: bool) -> list[LoraSet]:
        """Expand one written set into resolved sets (one per combination of its scales)."""
        name: str | None = None
        items_path = path
        if isinstance(raw, dict):
            depth = len(path)
            if not self._model(NamedLoraSet, raw, path,
                               lambda p: ("path", "scale") if len(p) > depth + 1 else ("name", "loras")):
                return []
            name, raw, items_path = raw["name"], raw["loras"], path + ("loras",)
            if "+" in name or "@" in name:
                self.fail(path + ("name",), "a set name may not hold '+' or '@' (they separate labels)")
                return []
        elif not isinstance(raw, list):
            self.fail(path, "a LoRA set is a list of {path, scale} items, [] for none, "
                            f"or {{name, loras}} (got {describe(raw)})")
            return []
        if raw and not self.model_takes_loras:
            self.fail(path, "model z-image-turbo takes no LoRAs; use model: z-image-turbo-lora "
                            "or remove the LoRAs")
            return []
        if len(raw) > MAX_LORAS:
            self.fail(items_path, f"at most {MAX_LORAS} LoRAs in a set (found {len(raw)})")
            return []
        choices: list[list[tuple[str, float]]] = []
        for i, item in enumerate(raw):
            ipath = items_path + (i,)
            if isinstance(item, list) and fixed:
                self.fail(path, "a top-level loras is one set for every job; "
                                "to vary loras put it under matrix:")
                return []
            if not self._model(LoraItem, item, ipath, lambda p: ("path", "scale")):
                return []
            scales = self.scales(item.get("scale", 1.0), ipath + ("scale",))
            if scales is None:
                return []
            if fixed and len(scales) > 1:
                self.fail(ipath + ("scale",), "a fixed LoRA set takes one scale; "
                                              "to vary scale put loras under matrix:")
                return []
            choices.append([(item["path"], s) for s in scales])
        total = math.prod(len(c) for c in choices)
        if total > self.limit:
            self.fail(path, f"this LoRA set expands to {total} scale combinations, "
                            f"over expansion_limit ({self.limit})")
            return []
        sets = []
        for combo in itertools.product(*choices):
            label = lora_label(combo, name)
            sets.append(LoraSet(label, name or (label if not combo else
                                                "+".join(stem(p) for p, _ in combo)), combo,
                                named=name is not None))
        return sets

    def scales(self, raw: Any, path: YamlPath) -> list[float | str] | None:
        """A scale: a number, a list of numbers, a range mapping, or ``"{variable}"`` (held
        as the variable's name: each job's own value of it, checked once the axes are known)."""
        if isinstance(raw, str):
            match = _SCALE_VARIABLE.fullmatch(raw.strip())
            if match is None:
                self.fail(path, f"a scale is a number in [0, {SCALE_MAX:g}], a list or range of "
                                f"them, or a variable in braces like \"{{style_scale}}\" (got {raw!r})")
                return None
            self.scale_variables.append((match[1], path))
            return [match[1]]
        if isinstance(raw, dict):
            rng = self._range_numbers(raw, path)
            if rng is None:
                return None
            start, step, count, _ = rng
            if count > self.limit:
                self.fail(path, f"this scale range has {count} values, over expansion_limit")
                return None
            values = [round(start + i * step, 10) for i in range(count)]
            for end, value in (("from", values[0]), ("to", values[-1])):
                try:
                    check_scale(value)
                except ValueError as exc:
                    self.fail(path + (end,), str(exc))
                    return None
            return values
        listed = raw if isinstance(raw, list) else [raw]
        if not listed:
            self.fail(path, "has no values")
            return None
        out: list[float | str] = []
        for i, v in enumerate(listed):
            try:
                out.append(check_scale(v))
            except ValueError as exc:
                self.fail(path + (i,) if isinstance(raw, list) else path, str(exc))
                return None
        return out

    # ---- specs -----------------------------------------------------------------------

    def _model(self, model: type[BaseModel], raw: Any, path: YamlPath,
               candidates: Callable[[YamlPath], tuple[str, ...]]) -> BaseModel | None:
        if not isinstance(raw, dict):
            self.fail(path, f"must be a mapping of key: value (got {describe(raw)})")
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self.problems.extend(validation_problems(exc, self.src, path, candidates))
            return None

    def _range_numbers(self, raw: dict[str, Any], path: YamlPath) -> tuple[Any, Any, int, bool] | None:
        spec = self._model(RangeSpec, raw, path, lambda p: ("from", "to", "step"))
        if spec is None:
            return None
        assert isinstance(spec, RangeSpec)
        a, b, s = spec.from_, spec.to, spec.step
        if s <= 0:
            self.fail(path + ("step",), f"must be more than 0 (got {s})")
            return None
        if b < a:
            self.fail(path + ("to",), f"must not be below from ({a})")
            return None
        as_int = all(isinstance(x, int) for x in (a, b, s))
        count = (b - a) // s + 1 if as_int else math.floor(round((b - a) / s, 9)) + 1
        return a, s, int(count), as_int

    def axis(self, name: str, raw: Any, path: YamlPath) -> Axis | None:
        """One `matrix:` entry -> an Axis (or None after recording why not)."""
        if name.lower() in SECRET_KEYS:
            self.fail(path, "never put the API key in a manifest; export it and name the "
                            "variable in api_key_env", key=True)
            return None
        if not IDENTIFIER.fullmatch(name):
            self.fail(path, "an axis name is a request field or a variable name: letters, "
                            "digits and _, not starting with a digit", key=True)
            return None
        if name in RESERVED:
            self.fail(path, f"'{name}' is filled in by batchgen ({{{name}}}); pick another name",
                      key=True)
            return None
        if name == "loras":
            return self._loras_axis(raw, path)
        if isinstance(raw, list):
            if not raw:
                self.fail(path, "has no values")
                return None
            if all(isinstance(v, dict) for v in raw):
                return self._rows_axis(name, raw, path, "rows")
            if any(isinstance(v, dict) for v in raw):
                i = next(i for i, v in enumerate(raw) if isinstance(v, dict) != isinstance(raw[0], dict))
                self.fail(path + (i,), "mixes rows (mappings) and plain values; use one or the other")
                return None
            return self._list_axis(name, raw, path)
        if isinstance(raw, dict):
            if "dynamic" in raw:
                return self._dynamic_axis(name, raw, path)
            if "random" in raw:
                return self._random_axis(name, raw, path)
            if "file" in raw:
                return self._file_axis(name, raw, path)
            if "zip" in raw:
                return self._zip_axis(name, raw, path)
            if "from" in raw or "to" in raw:
                return self._range_axis(name, raw, path)
            keys = ", ".join(raw) or "nothing"
            hint = "".join(did_you_mean(k, ("from", "to", "step", "random", "base", "file", "zip",
                                            "dynamic"))
                           for k in list(raw)[:1])
            self.fail(path, f"a mapping under matrix must be a range {{from, to, step}}, "
                            f"{{random: N, base: B}}, {{file: path}}, {{zip: {{...}}}} or "
                            f"{{dynamic: template}} (found keys: {keys}){hint}")
            return None
        self.fail(path, f"an axis needs a list of values (got {describe(raw)}); for one value "
                        f"for every job, write {name}: at the top level"
                        + ("" if name in REQUEST_FIELDS else " or under vars:"))
        return None

    def _list_axis(self, name: str, raw: list[Any], path: YamlPath) -> Axis | None:
        entries: list[Entry] = []
        ok = True
        for i, item in enumerate(raw):
            good, value = self.value(name, item, path + (i,))
            ok &= good
            if good:
                assign = {name: value}
                entries.append((assign, {name: str(value)} if isinstance(value, Template) else assign))
        return ListAxis(name, path, (name,), entries, _preview(e[1][name] for e in entries)) if ok else None

    def _loras_axis(self, raw: Any, path: YamlPath) -> Axis | None:
        if not isinstance(raw, list):
            self.fail(path, "loras under matrix is a list of LoRA sets, like [[], "
                            "[{path: ..., scale: [0.5, 1]}]]")
            return None
        if not raw:
            self.fail(path, "has no values")
            return None
        entries: list[Entry] = []
        labels: dict[str, int] = {}
        ok = True
        for i, item in enumerate(raw):
            before = len(self.problems)
            sets = self.lora_sets(item, path + (i,), fixed=False)
            ok &= len(self.problems) == before
            for lset in sets:
                if lset.label in labels:
                    self.fail(path + (i,), f"two LoRA sets have the label '{lset.label}' (sets "
                                           f"{labels[lset.label]} and {i}); give one a name:")
                    ok = False
                    break
                labels[lset.label] = i
                entries.append(({"loras": lset}, {"loras": lset.label}))
            if len(entries) > self.limit:
                self.fail(path, f"more than expansion_limit ({self.limit}) LoRA sets")
                return None
        if not ok:
            return None
        return ListAxis("loras", path, ("loras",), entries, _preview(e[1]["loras"] for e in entries),
                        "loras")

    def _range_axis(self, name: str, raw: dict[str, Any], path: YamlPath) -> Axis | None:
        if name in FIELD_CHECKS and name not in ("seed", "strength"):
            self.fail(path, f"a range makes sense for seed, strength or your own variables, "
                            f"not {name}")
            return None
        rng = self._range_numbers(raw, path)
        if rng is None:
            return None
        start, step, count, as_int = rng
        if name == "seed" and not as_int:
            self.fail(path, "a seed range needs whole numbers for from, to and step")
            return None
        if name in FIELD_CHECKS:
            last = start + (count - 1) * step if as_int else round(start + (count - 1) * step, 10)
            for end, value in (("from", start), ("to", last)):
                try:
                    FIELD_CHECKS[name](value)
                except ValueError as exc:
                    self.fail(path + (end,), str(exc))
                    return None
        desc = f"range {raw.get('from')}..{raw.get('to')} step {step}"
        return RangeAxis(name, path, start, step, count, as_int, desc)

    def _random_axis(self, name: str, raw: dict[str, Any], path: YamlPath) -> Axis | None:
        if name != "seed":
            self.fail(path, f"{{random: N}} makes seeds; it belongs to the seed axis, not {name}")
            return None
        spec = self._model(RandomSpec, raw, path, lambda p: ("random", "base"))
        if spec is None:
            return None
        assert isinstance(spec, RandomSpec)
        return RandomAxis(name, path, spec.random, spec.base,
                          f"{spec.random} random seeds (base {spec.base})")

    def _dynamic_axis(self, name: str, raw: dict[str, Any], path: YamlPath) -> Axis | None:
        from batchgen.manifest.dynamic import build_dynamic_axis  # loads nothing until used

        if name in FIELD_CHECKS and name != "prompt":
            self.fail(path, f"a dynamic prompt makes text: it belongs to the prompt axis or a "
                            f"variable, not {name}")
            return None
        spec = self._model(DynamicSpec, raw, path, lambda p: ("dynamic", "random", "base", "wildcards"))
        if spec is None:
            return None
        assert isinstance(spec, DynamicSpec)
        return build_dynamic_axis(name, spec, path, self.src, self.base_dir, self.shown_dir,
                                  self.limit, self.fail)

    def _zip_axis(self, name: str, raw: dict[str, Any], path: YamlPath) -> Axis | None:
        spec = self._model(ZipSpec, raw, path, lambda p: ("zip",))
        if spec is None:
            return None
        assert isinstance(spec, ZipSpec)
        lists = spec.zip
        if not lists:
            self.fail(path + ("zip",), "has no lists to zip")
            return None
        lengths = {k: len(v) for k, v in lists.items()}
        first = next(iter(lengths))
        for key, n in lengths.items():
            if n != lengths[first]:
                self.fail(path + ("zip", key), f"zip lists must be equally long: '{first}' has "
                                               f"{lengths[first]} values, '{key}' has {n}")
                return None
        rows = [{k: lists[k][i] for k in lists} for i in range(lengths[first])]
        if not rows:
            self.fail(path + ("zip",), "has no values")
            return None
        paths = [{k: path + ("zip", k, i) for k in lists} for i in range(len(rows))]
        return self._rows_axis(name, rows, path, "zip", paths)

    def _rows_axis(self, name: str, rows: list[dict[str, Any]], path: YamlPath, how: str,
                   paths: list[dict[str, YamlPath]] | None = None) -> Axis | None:
        columns = list(rows[0])
        if not self._columns(name, columns, path + ((0,) if paths is None else ("zip",))):
            return None
        entries: list[Entry] = []
        ok = True
        for i, row in enumerate(rows):
            rpath = path + (i,)
            if paths is None and set(row) != set(columns):
                self.fail(rpath, f"row keys differ from the first row's ({', '.join(columns)}); "
                                 "every row needs the same keys")
                ok = False
                continue
            assign: dict[str, Any] = {}
            shown: dict[str, Any] = {}
            for key in columns:
                vpath = paths[i][key] if paths is not None else rpath + (key,)
                if key == "loras":
                    sets = self.lora_sets(row[key], vpath, fixed=True)
                    good, value = bool(sets), (sets[0] if sets else None)
                else:
                    good, value = self.value(key, row[key], vpath)
                ok &= good
                assign[key] = value
                shown[key] = str(value) if isinstance(value, (Template, LoraSet)) else value
            entries.append((assign, {name: shown}))
        if not ok:
            return None
        desc = f"{len(entries)} rows ({', '.join(columns)})" if how == "rows" else \
            f"zip of {len(entries)} rows ({', '.join(columns)})"
        return ListAxis(name, path, tuple(columns), entries, desc, "rows")

    def _columns(self, axis: str, columns: list[str], path: YamlPath, *, shown: str | None = None,
                 line: int = 0) -> bool:
        """Row keys must be usable names; a row axis named like a field must set that field."""
        def bad(message: str) -> bool:
            if shown is None:
                self.fail(path, message)
            else:
                self.problems.append(Problem(shown, line, 0, axis, message))
            return False

        seen: set[str] = set()
        for col in columns:
            if col.lower() in SECRET_KEYS:
                return bad("never put the API key in a manifest; export it and name the "
                           "variable in api_key_env")
            if not IDENTIFIER.fullmatch(col):
                return bad(f"column {excerpt(col)} is not a usable name (letters, digits, _)")
            if col in RESERVED:
                return bad(f"column '{col}' is filled in by batchgen; rename it")
            if col in seen:
                return bad(f"column '{col}' appears twice")
            if col == "loras" and shown is not None:
                return bad("LoRA sets cannot come from a data file; use the loras axis")
            seen.add(col)
        if axis in REQUEST_FIELDS and axis not in columns:
            return bad(f"axis '{axis}' gives rows without a '{axis}' key (keys: "
                       f"{', '.join(columns)}); name the axis after what it holds, e.g. rows:")
        return True

    def _file_axis(self, name: str, raw: dict[str, Any], path: YamlPath) -> Axis | None:
        spec = self._model(FileSpec, raw, path, lambda p: ("file",))
        if spec is None:
            return None
        assert isinstance(spec, FileSpec)
        fpath = path + ("file",)
        kind = kind_of(spec.file)
        if kind is None:
            self.fail(fpath, f"a data file must end in .txt, .csv or .jsonl (got {excerpt(spec.file)})")
            return None
        file = self.base_dir / spec.file
        shown = str(self.shown_dir / spec.file)
        rel = PurePosixPath(Path(spec.file).as_posix()).as_posix()
        if not file.is_file():
            self.fail(fpath, f"no such file: {shown}" if not file.exists() else f"{shown} is not a file")
            return None
        size, first_bad = count_records(file, kind)
        if first_bad is not None:
            number, bad = first_bad
            self.problems.append(Problem(shown, number, bad.col, name, bad.message))
            return None
        if size == 0:
            self.fail(fpath, f"{shown} holds no {'values' if kind == 'text' else 'rows'}")
            return None
        if kind == "text":
            return TextFileAxis(name, path, file, shown, rel, size,
                                f"{size} {'line' if size == 1 else 'lines'} of {rel}")
        line, columns = first_columns(file, kind)
        if isinstance(columns, BadLine):
            self.problems.append(Problem(shown, line, columns.col, name, columns.message))
            return None
        assert columns is not None
        if not self._columns(name, columns, fpath, shown=shown, line=line):
            return None
        return RowFileAxis(name, path, file, shown, rel, kind, columns, size,
                           f"{size} {'row' if size == 1 else 'rows'} of {rel} ({', '.join(columns)})")
