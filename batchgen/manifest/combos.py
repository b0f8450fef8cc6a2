"""`include:` and `exclude:` of a manifest, checked at load time into Include and Exclude cells.

Load-time only: every key is checked against the axes and fields before the first job
exists; the expansion uses the cells it returns and never imports this module.
"""

from __future__ import annotations

from typing import Any

from batchgen.manifest.axes import LoraSet
from batchgen.manifest.builder import AxisBuilder
from batchgen.manifest.expand import Exclude, Include
from batchgen.manifest.fields import describe, did_you_mean
from batchgen.manifest.source import YamlPath
from batchgen.manifest.templates import Template

__all__ = ["parse_excludes", "parse_includes"]


def parse_includes(raw: Any, builder: AxisBuilder, known: dict[str, str],
                   loras: dict[str, LoraSet], unsure: set[str] = frozenset(),  # type: ignore[assignment]
                   lenient: bool = False) -> list[Include]:
    """`include:` entries; each key must name a request field, a variable or an axis value.

    Keys in ``unsure`` (or any key, when ``lenient``) belong to parts already reported broken:
    they are skipped without a second error.
    """
    path: YamlPath = ("include",)
    out: list[Include] = []
    for i, entry in enumerate(_entries(raw, path, builder)):
        epath = path + (i,)
        assign: dict[str, Any] = {}
        record: dict[str, Any] = {}
        ok = True
        for key, value in entry.items():
            kpath = epath + (key,)
            if key not in known:
                if key in unsure or lenient:
                    ok = False
                    continue
                builder.fail(kpath, f"'{key}' names no request field, variable or axis"
                                    + did_you_mean(key, known), key=True)
                ok = False
                continue
            if key == "loras":
                lset = _lora_choice(value, kpath, builder, loras)
                ok &= lset is not None
                assign[key], record[key] = lset, (lset.label if lset else None)
                continue
            good, checked = builder.value(key, value, kpath)
            ok &= good
            assign[key] = checked
            record[key] = str(checked) if isinstance(checked, Template) else checked
        if ok:
            out.append(Include(epath, assign, record))
    return out


def parse_excludes(raw: Any, builder: AxisBuilder, on_axes: dict[str, str],
                   loras: dict[str, LoraSet], unsure: set[str] = frozenset(),  # type: ignore[assignment]
                   lenient: bool = False) -> list[Exclude]:
    """`exclude:` entries; each key must be something an axis varies."""
    path: YamlPath = ("exclude",)
    out: list[Exclude] = []
    for i, entry in enumerate(_entries(raw, path, builder)):
        epath = path + (i,)
        exclude = Exclude(epath)
        ok = True
        for key, value in entry.items():
            kpath = epath + (key,)
            if key not in on_axes:
                if key in unsure or lenient:
                    ok = False
                    continue
                builder.fail(kpath, f"'{key}' is not set by any matrix axis, so it cannot "
                                    "select cells" + did_you_mean(key, on_axes), key=True)
                ok = False
                continue
            if key == "loras":
                if not isinstance(value, str) or not any(value in (s.label, s.name)
                                                         for s in loras.values()):
                    builder.fail(kpath, f"match a LoRA set by its label or name, one of: "
                                        f"{', '.join(sorted(loras)[:12])}"
                                        + (did_you_mean(value, loras) if isinstance(value, str) else ""))
                    ok = False
                exclude.conditions.append((key, value))
                continue
            good, checked = builder.value(key, value, kpath)
            ok &= good
            exclude.conditions.append((key, checked))
        if ok:
            out.append(exclude)
    return out


def _entries(raw: Any, path: YamlPath, builder: AxisBuilder) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        builder.fail(path, f"must be a list of mappings (got {describe(raw)})")
        return []
    good = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry:
            builder.fail(path + (i,), f"must be a non-empty mapping of key: value (got {describe(entry)})")
        else:
            good.append(entry)
    return good if len(good) == len(raw) else []


def _lora_choice(value: Any, path: YamlPath, builder: AxisBuilder,
                 loras: dict[str, LoraSet]) -> LoraSet | None:
    """A LoRA set in an include: a label/name from the loras axis, or a set written out."""
    if isinstance(value, str):
        if value in loras:
            return loras[value]
        named = [s for s in loras.values() if s.name == value]
        if len(named) == 1:
            return named[0]
        builder.fail(path, f"'{value}' is not the label of a LoRA set in the loras axis"
                           + did_you_mean(value, loras))
        return None
    sets = builder.lora_sets(value, path, fixed=True)
    return sets[0] if sets else None
