"""Prompt variety in the dynamic-prompt syntax the Stable Diffusion community writes.

``{red|blue|green} {car|bike}``, weights (``{2::red|blue}``), several picks
(``{2$$a|b|c}``) and ``__wildcards__`` read from files in a ``wildcards/`` folder next to the
manifest, through the ``dynamicprompts`` package (the optional extra ``batchgen[prompts]``).
An axis draws N prompts at random, reproducibly from a base seed, or takes every combination.
The template is parsed once, at load, so bad syntax and missing wildcard files are reported
at the manifest's line; each pass generates the prompts afresh, one at a time, so a million of
them are never held at once. The package is imported only by a manifest that uses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batchgen.errors import Problem
from batchgen.manifest.axes import Axis, Entry
from batchgen.manifest.source import YamlPath

__all__ = ["DynamicAxis", "DynamicTemplate", "DynamicUnavailable", "build_dynamic_axis"]

_LEFTOVER = re.compile(r"__[A-Za-z0-9_./*-]+__")
#: An inner dynamic axis no bigger than this is generated once per pass, not per outer value.
_SMALL = 100_000


class DynamicUnavailable(ValueError):
    """The optional package is not installed."""


def _package() -> Any:
    try:
        import dynamicprompts  # noqa: F401
        from dynamicprompts.enums import SamplingMethod
        from dynamicprompts.parser.parse import parse
        from dynamicprompts.sampling_context import SamplingContext
        from dynamicprompts.wildcards import WildcardManager
    except ImportError:
        raise DynamicUnavailable("dynamic prompts need the optional package dynamicprompts: "
                                 "pip install 'batchgen[prompts]'") from None
    return SamplingMethod, parse, SamplingContext, WildcardManager


class DynamicTemplate:
    """A parsed dynamic-prompt template and the wildcard folder it reads."""

    def __init__(self, source: str, wildcards: Path) -> None:
        method, parse, context, manager = _package()
        from pyparsing import ParseBaseException

        self.source = source
        self.wildcards = wildcards
        self._method, self._context, self._manager = method, context, manager
        depth, deepest = _brace_depth(source)
        if depth > MAX_BRACE_DEPTH:
            raise ValueError(f"bad dynamic prompt at character {deepest}: choices nested more than "
                             f"{MAX_BRACE_DEPTH} deep (near {_excerpt(source, deepest)!r})")
        try:
            with _quiet():
                self.command = parse(source)
        except ParseBaseException as exc:
            opened, closed = source.count("{"), source.count("}")
            why = ("a '{' is never closed" if opened > closed else
                   "a '}' closes nothing" if closed > opened else exc.msg)
            raise ValueError(f"bad dynamic prompt at character {exc.col}: {why} "
                             f"(near {_excerpt(source, exc.col)!r}); write {{a|b}} for a choice") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"bad dynamic prompt: {exc}") from None

    def missing_wildcards(self) -> list[str]:
        """Wildcards the template names that no file in the wildcard folder provides."""
        manager = self.manager()
        missing = []
        for name in _wildcards(self.command):
            if not list(manager.get_values(name).string_values):
                missing.append(name)
        return missing

    def manager(self) -> Any:
        return self._manager(self.wildcards if self.wildcards.is_dir() else None)

    def generate(self, draw: bool, base: int = 0) -> Iterator[str]:
        """Prompts in a fixed order: endless random draws from ``Random(base)``, or (``draw``
        false) every combination once."""
        method = self._method.RANDOM if draw else self._method.COMBINATORIAL
        ctx = self._context(wildcard_manager=self.manager(), default_sampling_method=method,
                            rand=random.Random(base))
        results = iter(ctx.sample_prompts(self.command, None))
        while True:
            with _quiet():  # wildcard values are parsed as they are drawn
                result = next(results, None)
            if result is None:
                return
            yield str(result)

    def distinct(self, draws: int, base: int) -> Iterator[str]:
        """``draws`` different prompts drawn at random; stops early (the caller counts) when
        fresh ones stop coming, which only a template with fewer prompts than asked does."""
        seen: set[bytes] = set()  # 8 bytes of digest per prompt: a pass never holds the texts
        budget = 20 * draws + 1000
        for tries, text in enumerate(self.generate(True, base)):
            key = hashlib.blake2b(text.encode(), digest_size=8).digest()
            if key in seen:
                if tries > budget:
                    return
                continue
            seen.add(key)
            yield text
            if len(seen) == draws:
                return

    def combinations(self) -> int | None:
        """How many prompts the template makes, from its structure; None when it cannot be
        told without generating them (multi-picks, variables, nested wildcard values)."""
        return _count(self.command, self.manager())

    def count_combinations(self, limit: int) -> int:
        """How many combinations there are, counted up to ``limit + 1`` (then: too many)."""
        known = self.combinations()
        if known is not None:
            return min(known, limit + 1)
        n = 0
        for _ in self.generate(False):
            n += 1
            if n > limit:
                break
        return n


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pyparsing warns about how dynamicprompts builds its grammar; nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _count(command: Any, manager: Any) -> int | None:
    from dynamicprompts.commands import (LiteralCommand, SequenceCommand, VariantCommand,
                                         WildcardCommand)

    if isinstance(command, LiteralCommand):
        return 1
    if isinstance(command, SequenceCommand):
        total = 1
        for token in command.tokens:
            n = _count(token, manager)
            if n is None:
                return None
            total *= n
        return total
    if isinstance(command, VariantCommand) and command.min_bound == command.max_bound == 1:
        total = 0
        for option in command.variants:
            n = _count(option.value, manager)
            if n is None:
                return None
            total += n
        return total
    if isinstance(command, WildcardCommand) and isinstance(command.wildcard, str):
        values = list(manager.get_values(command.wildcard).string_values)
        if any(c in v for v in values for c in "{}_$"):
            return None  # values that are templates themselves
        return len(values)
    return None


def _wildcards(command: Any) -> Iterator[str]:
    """The plain wildcard names anywhere in a parsed template."""
    from dynamicprompts.commands import Command, WildcardCommand

    if isinstance(command, WildcardCommand) and isinstance(command.wildcard, str):
        yield command.wildcard
    if not dataclasses.is_dataclass(command):
        return
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        items = value if isinstance(value, (list, tuple)) else \
            list(value.values()) if isinstance(value, dict) else [value]
        for item in items:
            inner = getattr(item, "value", item)  # a variant option wraps its command
            if isinstance(inner, Command):
                yield from _wildcards(inner)


#: choices inside choices ({a|{b|{c|d}}}) deeper than this are refused before parsing: the
#: parser recurses once per level, and no prompt means a hundred levels
MAX_BRACE_DEPTH = 20


def _brace_depth(source: str) -> tuple[int, int]:
    """How deep ``{`` nest in ``source`` (counted up to one past MAX_BRACE_DEPTH), and the
    character (from 1) where that depth is first reached."""
    depth = deepest = where = 0
    for i, char in enumerate(source):
        if char == "{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, i + 1
                if depth > MAX_BRACE_DEPTH:
                    break
        elif char == "}" and depth:
            depth -= 1
    return deepest, where


def _excerpt(source: str, col: int) -> str:
    start = max(0, col - 15)
    return ("..." if start else "") + source[start:col + 15]


class DynamicAxis(Axis):
    """A matrix axis of prompts (or a text variable) from one dynamic-prompt template.

    The ``prompt`` axis records the template in each job's axes (the request holds the
    prompt it became); a variable axis records the value and ``<name>_template``.
    """

    kind = "dynamic"

    def __init__(self, name: str, path: YamlPath, template: DynamicTemplate, count: int | None,
                 base: int, size: int, where: tuple[str, int, int], description: str) -> None:
        super().__init__(name, path, (name,), size, description)
        self.template = template
        self.count = count
        self.base = base
        self.where = where

    def for_pass(self, inner: bool) -> Any:
        return list(self) if inner and self.size <= _SMALL else self

    def __iter__(self) -> Iterator[Entry | Problem]:
        name, source = self.name, self.template.source
        as_prompt = name == "prompt"
        made = 0
        texts = (self.template.generate(False) if self.count is None
                 else self.template.distinct(self.count, self.base))
        for text in texts:
            made += 1
            leftover = _LEFTOVER.search(text)
            if leftover is not None:
                file, line, col = self.where
                yield Problem(file, line, col, f"matrix.{name}.dynamic",
                              f"{leftover.group()} has no values: no wildcard file for it in "
                              f"{self.template.wildcards}")
                continue
            assign = {name: text}
            yield assign, ({name: source} if as_prompt else
                           {name: text, f"{name}_template": source})
        if self.count is not None and made < self.count:
            file, line, col = self.where
            yield Problem(file, line, col, f"matrix.{name}.random",
                          f"only {made} different prompts could be drawn of the {self.count} "
                          "asked for; ask for fewer, or leave random: out to take every one")


def build_dynamic_axis(name: str, spec: Any, path: YamlPath, src: Any, base_dir: Path,
                       shown_dir: Path, limit: int,
                       fail: Callable[[YamlPath, str], None]) -> DynamicAxis | None:
    """The axis for a checked ``{dynamic: ...}`` spec, or None after ``fail`` says why not:
    the template parsed, its wildcard files found, its size known and within ``limit``."""
    folder = base_dir / spec.wildcards
    try:
        template = DynamicTemplate(spec.dynamic, folder)
    except DynamicUnavailable as exc:
        fail(path, str(exc))
        return None
    except ValueError as exc:
        fail(path + ("dynamic",), str(exc))
        return None
    missing = template.missing_wildcards()
    if missing:
        names = ", ".join(f"__{m}__" for m in missing)
        fail(path + ("dynamic",), f"no values for {names}: put {missing[0]}.txt (one value per "
                                  f"line) in {shown_dir / spec.wildcards}/"
                                  + ("" if folder.is_dir() else " (the folder does not exist)"))
        return None
    if spec.random is not None:
        available = template.combinations()
        if available is not None and spec.random > available:
            fail(path + ("random",), f"this template makes only {available} different prompts; "
                                     f"ask for random: {available} or fewer, or leave random: "
                                     "out to take every one")
            return None
        size = spec.random
        desc = f"{spec.random} different random prompts (base {spec.base}) of {spec.dynamic!r}"
    else:
        size = template.count_combinations(limit)
        if size > limit:
            fail(path + ("dynamic",), f"this template has more than expansion_limit ({limit:,}) "
                                      "combinations; draw some with random: N")
            return None
        desc = f"all {size} combinations of {spec.dynamic!r}"
    line, col = src.where(path + ("dynamic",))
    return DynamicAxis(name, path, template, spec.random, spec.base, size, (src.file, line, col),
                       desc)
