"""The counting pass's inner loop: the innermost axis taken value by value.

``plan`` and a run's validating pass expand every job only to check, count and number it
(``Expansion.iter_jobs(light=...)``). For the common shape, a seed range or any other plain
axis innermost, everything about a request but that axis's value is fixed for the whole run
of the innermost axis: so per outer cell the request is written once as canonical JSON with
gaps (the prompt, the one field the axis sets), the prompt template is rendered once down to
the axis's own fields, and per value what is left is the floor: render, fill, hash, remember.
No dict, no Job, no yield per job.

Ids must not depend on which loop made them: the bytes hashed are the bytes
``Expansion.jobs_of`` hashes (tests/manifest/test_lean.py holds the two to each other), and
anything this loop does not handle goes to ``jobs_of`` with the pass's state: the first Jobs
(the preview), a value whose request was seen before (a replica, a whole Job), a prompt that
fails a check, an outer cell whose request this loop cannot write (img2img, a LoRA scale taken
from the axis, a float only ``json`` writes right).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from batchgen.errors import Problem
from batchgen.manifest.axes import Axis, ListAxis, RandomAxis, RangeAxis
from batchgen.manifest.fields import LORA_MODEL, MAX_PROMPT_CHARS
from batchgen.manifest.templates import Template

if TYPE_CHECKING:
    from batchgen.job import Job
    from batchgen.manifest.expand import Expansion, PassState

__all__ = ["lean_axis", "lean_jobs"]

#: Jobs counted between two counts yielded: a caller stepping the pass stays responsive.
CHUNK = 4096
#: Request fields an innermost axis may set and still be taken value by value (the others
#: change what else the request holds, or how it is checked).
_FILLED = ("seed", "size")
_OTHER_FIELDS = ("prompt", "loras", "image_url", "strength", "mask", "output_format",
                 "enable_base64_output")
_END = object()


def lean_axis(axis: Axis) -> bool:
    """True when the counting pass can take ``axis``, innermost, value by value."""
    return axis.sets == (axis.name,) and axis.name not in _OTHER_FIELDS \
        and axis.plain_values() is not None


def lean_jobs(ex: Expansion, st: PassState) -> Iterator[Job | Problem | int]:
    """A lean pass (``st.lean``) over ``ex``, its last axis value by value: the items
    ``ex.jobs_of`` would give, the counted jobs in fewer, larger counts."""
    inner = ex.axes[-1]
    name = inner.name
    widest = _widest(inner)
    for cell in ex._product(None, ex.axes[:-1]):
        if isinstance(cell, Problem):
            yield cell
            continue
        ctx, rec = cell
        values = iter(inner.plain_values())  # type: ignore[arg-type]
        while st.whole > 0:  # the first Jobs are whole ones (the preview)
            value = next(values, _END)
            if value is _END:
                break
            yield from ex.jobs_of(st, (({**ctx, name: value}, {**rec, name: value}),))
        else:
            yield from _run(ex, st, ctx, rec, name, values, widest)
    includes = ex.includes
    if includes:
        yield from ex.jobs_of(st, ((({**ex.base, **inc.assign}, dict(inc.record)) for inc in includes)))


def _run(ex: Expansion, st: PassState, ctx: dict[str, Any], rec: dict[str, Any], name: str,
         values: Iterator[Any], widest: int | None) -> Iterator[Job | Problem | int]:
    """One outer cell's run of the innermost axis."""
    whole = _whole_text(ex, ctx, name, widest) if widest is not None else None
    if whole is not None:
        yield from _run_text(ex, st, ctx, rec, name, values, whole)
        return
    gaps = _gaps(ex, ctx, name)
    if gaps is None:
        yield from ex.jobs_of(st, (({**ctx, name: v}, {**rec, name: v}) for v in values))
        return
    fmt, prompt, before, between, after = gaps
    seen = st.seen
    add, sha256, dumps = seen.add, hashlib.sha256, orjson.dumps
    max_chars = MAX_PROMPT_CHARS
    fills = name in _FILLED
    counted = 0
    for value in values:
        try:
            if fmt is not None:
                prompt = fmt(value)
            if not prompt or prompt.isspace() or len(prompt) > max_chars:
                raise ValueError  # jobs_of says what is wrong with it
            if fills:
                if fmt is not None:
                    body = before + dumps(prompt) + between + dumps(value) + after
                else:
                    body = before + dumps(value) + after
            else:
                body = before + dumps(prompt) + after
            key = sha256(body).digest()[:8]
            if key in seen:
                raise KeyError  # a replica: a whole Job
        except (ValueError, KeyError, TypeError, IndexError, orjson.JSONEncodeError):
            if counted:
                st.index += counted
                yield counted
                counted = 0
            yield from ex.jobs_of(st, (({**ctx, name: value}, {**rec, name: value}),))
            continue
        add(key)
        counted += 1
        if counted == CHUNK:
            st.index += counted
            yield counted
            counted = 0
    if counted:
        st.index += counted
        yield counted


def _run_text(ex: Expansion, st: PassState, ctx: dict[str, Any], rec: dict[str, Any],
              name: str, values: Iterator[Any], pieces: tuple[bytes, ...]) -> Iterator[Job | Problem | int]:
    """``_run`` for whole numbers whose prompt is never too long, empty or blank: the
    canonical body is ``pieces`` joined by the value's digits (``_whole_text``)."""
    seen = st.seen
    add, sha256 = seen.add, hashlib.sha256
    while True:
        counted = taken = 0
        for value in islice(values, CHUNK):
            taken += 1
            key = sha256(str(value).encode().join(pieces)).digest()[:8]
            if key in seen:  # a replica: a whole Job
                if counted:
                    st.index += counted
                    yield counted
                    counted = 0
                yield from ex.jobs_of(st, (({**ctx, name: value}, {**rec, name: value}),))
                continue
            add(key)
            counted += 1
        if counted:
            st.index += counted
            yield counted
        if taken < CHUNK:  # the values ran out (a slice ending in a replica counts none: go on)
            return


def _whole_text(ex: Expansion, ctx: dict[str, Any], name: str, widest: int) -> tuple[bytes, ...] | None:
    """The canonical body of ``ctx``'s request cut where the innermost axis's whole number
    goes, when it goes in as its digits alone (``{seed}`` in the prompt, the seed itself):
    JSON writes digits as they are, so a job's body is the pieces joined by its digits. None
    when it is not that simple, or a prompt could be too long."""
    prompt = ctx["prompt"]
    fills = name in _FILLED
    if name == "size":
        return None
    gap = None  # where the digits go
    text: list[str | None] = []
    if type(prompt) is Template and name in prompt.fields:
        fixed, uses = 0, 0
        try:
            for literal, field, spec, conversion in prompt.parts:
                text.append(_json_text(literal))
                fixed += len(literal)
                if field is None:
                    continue
                if field == name:
                    if spec or conversion not in (None, "s", "r"):
                        return None
                    text.append(gap)
                    uses += 1
                    continue
                value = ctx[field]
                if conversion == "r":
                    value = repr(value)
                elif conversion == "s":
                    value = str(value)
                elif conversion == "a":
                    value = ascii(value)
                value = format(value, spec)
                text.append(_json_text(value))
                fixed += len(value)
        except (KeyError, ValueError, TypeError, IndexError, orjson.JSONEncodeError):
            return None
        if fixed + uses * widest > MAX_PROMPT_CHARS:
            return None
    elif not fills:
        return None
    gaps = _gaps(ex, ctx, name)
    if gaps is None:
        return None
    fmt, fixed_prompt, before, between, after = gaps
    if fmt is None:  # a fixed prompt, in ``before`` already
        if not fixed_prompt or fixed_prompt.isspace() or len(fixed_prompt) > MAX_PROMPT_CHARS:
            return None
        return before, after
    pieces: list[bytes] = []
    run = before + b'"'
    for chunk in text:
        if chunk is gap:
            pieces.append(run)
            run = b""
        else:
            run += chunk.encode()  # type: ignore[union-attr]
    run += b'"' + between
    if fills:
        pieces.append(run)
        run = b""
    pieces.append(run + after)
    return tuple(pieces)


def _json_text(text: str) -> str:
    """``text`` as it stands inside a JSON string (orjson's escapes); raises
    orjson.JSONEncodeError for text JSON cannot hold."""
    return orjson.dumps(text)[1:-1].decode()


def _widest(axis: Axis) -> int | None:
    """The most characters one of the axis's values takes as text, if every value is a
    whole number (None otherwise)."""
    if isinstance(axis, RangeAxis):
        if not axis.as_int:
            return None
        last = axis.start + (axis.size - 1) * axis.step
        return max(len(str(int(axis.start))), len(str(int(last))))
    if isinstance(axis, RandomAxis):
        return 10  # 31 bits
    if isinstance(axis, ListAxis):
        plain = axis.plain_values()
        if plain is None or not all(type(v) is int for v in plain):
            return None
        return max((len(str(v)) for v in plain), default=0)
    return None


def _gaps(ex: Expansion, ctx: dict[str, Any], name: str) -> tuple[Any, ...] | None:
    """The request of ``ctx`` with gaps where the innermost axis (``name``) changes it:
    (format, prompt, bytes before, between and after the gaps), the format a callable giving
    the prompt for a value, else None and the fixed prompt. None when the request is not one
    this loop writes (``jobs_of`` then takes the whole run)."""
    from batchgen.manifest.expand import _plain_scales

    if ctx["image_url"] is not None or ctx["strength"] is not None or ctx["mask"] is not None:
        return None
    prompt: Any = ctx["prompt"]
    fmt = None
    if type(prompt) is Template:
        if name in prompt.fields:
            fmt = _partial(prompt, ctx, name)
            if fmt is None:
                return None
            prompt = None
        else:
            try:
                prompt = prompt.render(ctx)
            except (KeyError, ValueError, TypeError, IndexError):
                return None
    elif not isinstance(prompt, str):
        return None
    fills = name in _FILLED
    if fmt is None and not fills:
        return None  # every value the same request: replicas, made whole
    request: dict[str, Any] = {"prompt": prompt, "seed": ctx["seed"], "size": ctx["size"]}
    if ex.model == LORA_MODEL:
        lset = ctx["loras"]
        if lset.variables:
            if name in lset.variables:
                return None
            try:
                lset = lset.resolve(ctx)
            except ValueError:
                return None
        if not _plain_scales(lset):
            return None
        request["loras"] = lset.as_request() if lset.items else []
    request["output_format"] = ctx["output_format"]
    request["enable_base64_output"] = ctx["enable_base64_output"]
    gaps = ([name] if fills else []) + (["prompt"] if fmt is not None else [])
    pieces: list[bytes] = []
    text = ex.head + b"{"
    try:
        for i, key in enumerate(sorted(request)):
            text += (b"," if i else b"") + orjson.dumps(key) + b":"
            if key in gaps:
                pieces.append(text)
                text = b""
            else:
                text += orjson.dumps(request[key], option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    pieces.append(text + b"}}")
    if len(pieces) == 3:  # "prompt" sorts before "seed" and "size"
        return fmt, prompt, pieces[0], pieces[1], pieces[2]
    return fmt, prompt, pieces[0], b"", pieces[1]


def _partial(tmpl: Template, ctx: dict[str, Any], name: str) -> Any:
    """``tmpl`` rendered with ``ctx`` but for the fields ``name``: the bound ``format`` of
    what is left (``{0}`` where ``{name}`` was); None if a value does not fit."""
    out: list[str] = []
    for literal, field, spec, conversion in tmpl.parts:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if field == name:
            out.append("{0" + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
            continue
        try:
            value = ctx[field]
            if conversion == "r":
                value = repr(value)
            elif conversion == "s":
                value = str(value)
            elif conversion == "a":
                value = ascii(value)
            text = format(value, spec)
        except (KeyError, ValueError, TypeError, IndexError):
            return None
        out.append(text.replace("{", "{{").replace("}", "}}"))
    return "".join(out).format
