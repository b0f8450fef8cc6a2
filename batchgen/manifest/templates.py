"""`{name}` templates (str.format syntax) for prompts, URLs, captions and file names.

A template is parsed once, at load, so an unknown field is reported at the manifest line and
rendering a job is a single ``format_map``. File-name rendering sanitizes every substituted
value: no value, whatever it holds, may lead a file out of the batch folder, and no value puts
a dot in a name (a dot ends a WebDataset key, so ``ghibli_0.25.png`` would split one sample in
two: a decimal point becomes ``p``, which also keeps scales in sorting order). Templates never
allow attribute or index access (``{a.b}``, ``{a[0]}``): they format values, nothing more.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from batchgen.job import IDENTIFIER

__all__ = ["DEFAULT_FILENAME", "FileNameTemplate", "Template", "sanitize", "tidy_name"]

#: The default `filename:`: 4,096 folders by the first three hex digits of the job id, so a
#: million jobs put about 250 images (with sidecars and captions, under 1,000 files) in each.
DEFAULT_FILENAME = "{job_id:.3}/{job_id}"
#: The default before folders were fanned out; still recognised as one name per job id.
FLAT_FILENAME = "{job_id}"
FANOUT = 3

_FORMATTER = string.Formatter()
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_DECIMAL_POINT = re.compile(r"(?<=[0-9])\.(?=[0-9])")
_LITERAL_OK = re.compile(r"[A-Za-z0-9._/-]*")
SEGMENT_MAX = 100
#: the widest width or precision a template field may ask for ({v:>1000}, {x:.1000f})
MAX_FORMAT_WIDTH = 1000
_DIGITS = re.compile(r"\d+")


def _parse(source: str) -> list[tuple[str, str | None, str, str | None]]:
    """str.format's own parser, with its messages reworded and only plain names allowed."""
    if not isinstance(source, str):
        raise ValueError("a template must be text")
    try:
        parts = list(_FORMATTER.parse(source))
    except ValueError as exc:
        raise ValueError(f"bad template ({exc}); write {{{{ and }}}} for literal braces") from None
    out: list[tuple[str, str | None, str, str | None]] = []
    for literal, field, spec, conversion in parts:
        if field is not None:
            if field == "" or field.isdigit():
                raise ValueError("empty {} in template: name the field, like {style}")
            if not IDENTIFIER.fullmatch(field):
                raise ValueError(f"{{{field}}}: template fields are plain names like {{style}} "
                                 "(no dots, brackets or spaces)")
            if "{" in (spec or ""):
                raise ValueError(f"{{{field}:{spec}}}: nested fields in a format spec are not supported")
            widest = max((int(n) for n in _DIGITS.findall(spec or "")), default=0)
            if widest > MAX_FORMAT_WIDTH:
                raise ValueError(f"{{{field}:{spec[:40]}}}: a width or precision of {widest:,}; at most "
                                 f"{MAX_FORMAT_WIDTH} (a template renders into one request)")
        out.append((literal, field, spec or "", conversion))
    return out


class Template:
    """A text with `{name}` fields, rendered with ``str.format_map``."""

    __slots__ = ("source", "fields", "path", "parts", "_constant")

    def __init__(self, source: str, path: tuple[str | int, ...] = ()) -> None:
        parts = _parse(source)
        self.source = source
        #: (literal, field, spec, conversion) as ``string.Formatter.parse`` gives them
        self.parts = parts
        #: where the template is written in the manifest, for errors found while rendering
        self.path = path
        #: Field names in order of first use.
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(f for _, f, _, _ in parts if f))
        # A template without fields still needs `{{` unescaped, once.
        self._constant: str | None = None if self.fields else source.format()

    def render(self, values: Mapping[str, Any]) -> str:
        """The text for one job; raises KeyError/ValueError if a value does not fit the spec."""
        if self._constant is not None:
            return self._constant
        return self.source.format_map(values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Template):
            return self.source == other.source
        return self.source == other

    def __hash__(self) -> int:
        return hash(self.source)

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def sanitize(text: str) -> str:
    """A value made fit for a file name: a decimal point becomes ``p`` (``0.5`` -> ``0p5``),
    anything else outside ``[A-Za-z0-9_-]`` becomes ``_`` (``/`` and other dots too: a value
    is never a folder, and never splits a WebDataset key)."""
    return _UNSAFE.sub("_", _DECIMAL_POINT.sub("p", text))


def tidy_name(name: str) -> str:
    """Make every path segment safe: no empty, `.` or `..` segment, at most 100 characters."""
    segments = name.split("/")
    for i, seg in enumerate(segments):
        if not seg or seg.strip(".") == "":
            seg = "_" * max(1, len(seg))
        segments[i] = seg[:SEGMENT_MAX]
    return "/".join(segments)


class FileNameTemplate:
    """The `filename:` template: literal parts checked at load, values sanitized per job."""

    __slots__ = ("source", "fields", "path", "_parts", "by_job_id")

    def __init__(self, source: str, path: tuple[str | int, ...] = ()) -> None:
        parts = _parse(source)
        if not source:
            raise ValueError("must not be empty")
        for literal, _, _, _ in parts:
            if not _LITERAL_OK.fullmatch(literal):
                bad = next(c for c in literal if not _LITERAL_OK.fullmatch(c))
                raise ValueError(f"character {bad!r} is not allowed in file names; use letters, "
                                 "digits, '.', '_', '-' and '/' for folders")
        shape = "".join(literal + ("X" if field else "") for literal, field, _, _ in parts)
        if shape.startswith("/"):
            raise ValueError("must be relative to the batch's images folder, not an absolute path")
        for seg in shape.split("/"):
            if seg in ("", ".", ".."):
                what = "an empty folder name ('//' or a trailing '/')" if not seg else f"a '{seg}' segment"
                raise ValueError(f"has {what}; file names must stay inside the batch folder")
        self.source = source
        self.path = path
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(f for _, f, _, _ in parts if f))
        self._parts = parts
        #: the name is a function of the job id alone (unique, so never checked for clashes)
        self.by_job_id = source in (DEFAULT_FILENAME, FLAT_FILENAME)

    def render(self, values: Mapping[str, Any]) -> str:
        """The file name for one job, every substituted value sanitized."""
        out: list[str] = []
        for literal, field, spec, conversion in self._parts:
            out.append(literal)
            if field is not None:
                value = values[field]
                if conversion == "r":
                    value = repr(value)
                elif conversion is not None:
                    value = str(value) if conversion == "s" else ascii(value)
                out.append(sanitize(format(value, spec)))
        return tidy_name("".join(out))

    def by_id(self, job_id: str) -> str:
        """The name of a job under one of the job-id templates, without formatting anything."""
        return f"{job_id[:FANOUT]}/{job_id}" if self.source == DEFAULT_FILENAME else job_id
