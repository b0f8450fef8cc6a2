"""YAML loading that remembers where every value came from.

A manifest error is only useful if it names the line, so the loader keeps a table of
path -> (line, column) for every key and value, and refuses what plain PyYAML lets slip
(duplicate keys, bytes that are not UTF-8). It never interprets what the values mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from batchgen.errors import ManifestError, Problem

__all__ = ["Source", "YamlPath", "decode_utf8", "load_yaml", "parse_yaml"]

YamlPath = tuple[str | int, ...]

#: An alias bomb ("billion laughs") expands a small file into a huge tree: stop well before.
_MAX_NODES = 200_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


#: Values nested deeper than this are refused where they start: composing recurses once per
#: level (50,000 nested ``[`` would end in a RecursionError), and a manifest needs a handful.
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """SafeLoader without the implicit types that surprise people in a manifest, and with a
    limit on nesting.

    Dates (`2024-01-01`) and the bare `=` stay text: a prompt or a variable is never meant to
    become a datetime object.
    """

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"values nested more than {MAX_DEPTH} levels deep",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class Source:
    """A parsed YAML document with the position of every key and value (1-based line, col)."""

    file: str
    data: Any
    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: YamlPath, *, key: bool = False) -> tuple[int, int]:
        """Position of ``path``, or of the nearest enclosing value that has one.

        ``key=True`` prefers the position of the mapping key itself (for "unknown key").
        """
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            pos = self.values.get(path[:end])
            if pos is not None:
                return pos
        return (1, 1)

    def problem(self, path: YamlPath, message: str, *, key: bool = False,
                field_name: str | None = None) -> Problem:
        """A Problem located at ``path``; the field shown is the dotted path unless given."""
        line, col = self.where(path, key=key)
        shown = field_name if field_name is not None else dotted(path)
        return Problem(self.file, line, col, shown, message)


def dotted(path: YamlPath) -> str:
    """`("matrix", "loras", 1, "scale")` -> `"matrix.loras.1.scale"`."""
    return ".".join(str(p) for p in path)


def decode_utf8(raw: bytes, file: str) -> str:
    """Decode ``raw`` as UTF-8 or raise a ManifestError naming the line and byte that is not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start:exc.start + 1].hex().upper()
        raise ManifestError([Problem(
            file, line, col, "",
            f"not UTF-8 text: byte 0x{bad} at line {line}, byte {col} cannot be decoded; "
            "save the file as UTF-8")]) from None
    return text[1:] if text.startswith("\ufeff") else text


def load_yaml(path: Path | str, display: str | None = None) -> Source:
    """Read and parse a YAML file; every failure is a ManifestError located in the file."""
    shown = display if display is not None else str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ManifestError([Problem(shown, 0, 0, "", "no such file")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(shown, 0, 0, "", "is a folder, not a manifest file")]) from None
    except OSError as exc:
        raise ManifestError([Problem(shown, 0, 0, "", f"cannot read: {exc.strerror}")]) from None
    return parse_yaml(decode_utf8(raw, shown), shown)


def parse_yaml(text: str, file: str) -> Source:
    """Parse one YAML document into plain Python data plus a position table.

    Mapping keys are always strings as written (`on:` stays "on", `1:` stays "1"): every key in
    a manifest is a name, and YAML 1.1 would otherwise turn some names into booleans.
    """
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#")
                               for ln in text.splitlines()):
        raise ManifestError([Problem(file, 1, 1, "",
                                     "the manifest is empty; it needs at least a prompt: line")])
    try:
        loader = _Loader(text)
    except ReaderError as exc:  # a NUL or another character YAML does not allow
        raise ManifestError([_reader_problem(file, text, exc)]) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ManifestError([_syntax_problem(file, exc)]) from None
        except ReaderError as exc:
            raise ManifestError([_reader_problem(file, text, exc)]) from None
        except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error we know is marked
            raise ManifestError([Problem(file, 1, 1, "", f"YAML error: {exc}")]) from None
        if node is None:
            raise ManifestError([Problem(file, 1, 1, "", "the manifest is empty")])
        builder = _Builder(loader, file)
        data = builder.build(node, ())
        if builder.problems:
            raise ManifestError(sorted(builder.problems, key=lambda p: (p.line, p.col)))
        return Source(file, data, builder.values, builder.keys)
    finally:
        loader.dispose()


def _reader_problem(file: str, text: str, exc: ReaderError) -> Problem:
    """A character YAML refuses (a NUL byte, a control character), located."""
    position = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return Problem(file, line, col, "", f"the manifest holds a character YAML does not allow "
                                        f"(U+{char:04X}); a manifest is text")


def _syntax_problem(file: str, exc: yaml.MarkedYAMLError) -> Problem:
    """Turn PyYAML's two-part message into one line, with a hint for the usual culprits."""
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem and exc.context_mark and exc.context_mark.line != getattr(mark, "line", -1):
        what += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if "'\\t'" in what:
        what += "; YAML does not allow tabs for indentation, use spaces"
    elif "found undefined alias" in what or "expected alphabetic or numeric character" in what:
        what += "; a value starting with * or & must be quoted"
    return Problem(file, line, col, "", f"YAML syntax error: {what}")


class _Builder:
    """Walks the composed node tree once, constructing values and recording positions."""

    def __init__(self, loader: _Loader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.values: dict[YamlPath, tuple[int, int]] = {}
        self.keys: dict[YamlPath, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self._count = 0
        self._stack: set[int] = set()

    def _pos(self, node: Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _fail(self, node: Node, path: YamlPath, message: str) -> None:
        line, col = self._pos(node)
        self.problems.append(Problem(self.file, line, col, dotted(path), message))

    def build(self, node: Node, path: YamlPath) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            if self._count == _MAX_NODES + 1:
                self._fail(node, path, f"more than {_MAX_NODES} YAML values (an alias bomb?)")
            return None
        self.values[path] = self._pos(node)
        if isinstance(node, ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.MarkedYAMLError as exc:
                self.problems.append(_syntax_problem(self.file, exc))
                return None
        if id(node) in self._stack:
            self._fail(node, path, "an alias refers to the value that contains it")
            return None
        self._stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self._stack.discard(id(node))
        self._fail(node, path, "unsupported YAML node")  # pragma: no cover
        return None

    def _mapping(self, node: MappingNode, path: YamlPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # `<<: *defaults` first, so the mapping's own keys (and their positions) win, as YAML says.
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for src in sources:
                if not isinstance(src, MappingNode):
                    self._fail(src, path, "a << merge needs a mapping (or a list of them)")
                    continue
                result.update(self._mapping(src, path))
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self._fail(key_node, path, "a key must be a plain name, not a list or mapping")
                continue
            key = str(key_node.value)
            if key in first_seen:
                self._fail(key_node, path + (key,),
                           f"duplicate key '{key}' (first at line {first_seen[key]}); "
                           "YAML would silently keep only the last one")
                continue
            first_seen[key] = key_node.start_mark.line + 1
            self.keys[path + (key,)] = self._pos(key_node)
            result[key] = self.build(value_node, path + (key,))
        return result
