"""Lazy expansion of a checked manifest into Jobs: the odometer, include/exclude, job ids,
file names and captions. Run-time only: the checks that build what it expands live in
``builder`` and ``combos``, which it never imports.

Every pass starts from scratch and yields one job at a time in a fixed order, so the same
manifest gives the same ids on any machine. A pass never holds the product, a data file or the
jobs it made; it keeps 8 bytes of hash per distinct request to number replicas. Problems found
while expanding (a bad data row, a template a value does not fit) are yielded, not raised, so
a caller can collect many of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson

from batchgen.manifest.axes import NO_LORAS, Axis, Entry, LoraSet
from batchgen.errors import Problem
from batchgen.manifest.fields import LORA_MODEL, MAX_PROMPT_CHARS, check_url
from batchgen.job import Job
from batchgen.manifest.templates import FileNameTemplate, Template
from batchgen.manifest.source import Source, YamlPath
from batchgen.manifest.lean import lean_axis, lean_jobs

__all__ = ["Exclude", "Expansion", "Include", "PassState", "job_hash"]

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_SORTED = orjson.OPT_SORT_KEYS


def canonical(model: str, request: dict[str, Any]) -> bytes:
    """The canonical JSON (UTF-8) of model and request that job ids hash: sorted keys, no
    spaces, no escaping beyond JSON's own, floats as Python writes them.

    orjson writes the same bytes several times faster, except for floats below 1e-4 or from
    1e16 up (it never uses an exponent) and for what it cannot encode at all (ints past 64
    bits): those requests go through ``json``, so an id never depends on which encoder ran.
    """
    for value in (request.get("strength"), *(lora.get("scale") for lora in request.get("loras", ()))):
        if type(value) is float and value and not 1e-4 <= abs(value) < 1e16:
            break
    else:
        try:
            return orjson.dumps({"model": model, "request": request}, option=_SORTED)
        except (orjson.JSONEncodeError, TypeError):
            pass
    return _ENCODER.encode({"model": model, "request": request}).encode("utf-8")


def _plain_scales(lset: LoraSet) -> bool:
    """True when every scale of the set is written the same by orjson and json (see canonical)."""
    return not any(type(s) is float and s and not 1e-4 <= abs(s) < 1e16 for _, s in lset.items)


def job_hash(model: str, request: dict[str, Any]) -> str:
    """First 16 hex chars of sha256 over the canonical JSON of model and request."""
    return hashlib.sha256(canonical(model, request)).hexdigest()[:16]


@dataclass
class Include:
    """An extra cell after the product: top-level values overridden by what the entry gives."""

    path: YamlPath
    assign: dict[str, Any]
    record: dict[str, Any]


@dataclass
class Exclude:
    """A partial cell: a product cell equal to it on every key is dropped."""

    path: YamlPath
    conditions: list[tuple[str, Any]] = field(default_factory=list)

    def matches(self, ctx: dict[str, Any]) -> bool:
        for key, want in self.conditions:
            have = ctx.get(key)
            if isinstance(have, LoraSet):
                if want != have.label and want != have.name:
                    return False
            elif have != want:
                return False
        return True


@dataclass(slots=True)
class PassState:
    """What one pass carries from job to job: the request keys it has seen, replicas per key,
    the next index, and how many Jobs it still makes whole before it only counts (``lean``)."""

    seen: set[bytes]
    whole: int = 0
    lean: bool = False
    index: int = 0
    counts: dict[bytes, int] = field(default_factory=dict)


class Expansion:
    """A restartable job stream over checked axes; each ``iter_jobs`` call is a full new pass."""

    def __init__(self, *, src: Source, model: str, batch: str, base: dict[str, Any],
                 axes: list[Axis], includes: list[Include], excludes: list[Exclude], repeat: int,
                 filename: FileNameTemplate, caption: Template | bool | None,
                 origins: dict[str, YamlPath]) -> None:
        self.src = src
        self.model = model
        self.batch = batch
        self.base = base
        self.axes = axes
        self.includes = includes
        self.excludes = excludes
        self.repeat = repeat
        self.filename = filename
        self.caption = caption
        #: field -> where it is set (top-level key), for per-job problems
        self.origins = origins
        #: field -> axis that sets it, to point a per-job problem at a data file line
        self.set_by = {name: ax for ax in axes for name in ax.sets}
        #: what every canonical body starts with ("model" sorts before "request")
        self.head = b'{"model":' + orjson.dumps(model) + b',"request":'

    @property
    def size(self) -> int:
        """Jobs before exclusion: product of axis sizes plus includes, times repeat."""
        product = 1
        for ax in self.axes:
            product *= ax.size
        return (product + len(self.includes)) * self.repeat

    # ---- cells -----------------------------------------------------------------------

    def _product(self, hits: list[int] | None, axes: list[Axis] | None = None,
                 ) -> Iterator[tuple[dict[str, Any], dict[str, Any]] | Problem]:
        """The full product (or of ``axes``), first axis outermost: an odometer over
        re-iterable axes."""
        axes = self.axes if axes is None else axes
        base, excludes = self.base, self.excludes
        if not axes:
            yield dict(base), {}
            return
        sources = [ax.for_pass(inner=i > 0) for i, ax in enumerate(axes)]
        last = len(axes) - 1
        ctxs: list[dict[str, Any]] = [base] * (last + 1)
        recs: list[dict[str, Any]] = [{}] * (last + 1)
        iters: list[Iterator[Entry | Problem]] = [iter(sources[0])] * (last + 1)
        level = 0
        while level >= 0:
            item = next(iters[level], None)
            if item is None:
                level -= 1
                continue
            if isinstance(item, Problem):
                yield item
                continue
            if level < last:
                assign, record = item
                ctxs[level + 1] = {**ctxs[level], **assign}
                recs[level + 1] = {**recs[level], **record}
                level += 1
                iters[level] = iter(sources[level])
                continue
            ctx0, rec0 = ctxs[level], recs[level]
            for item in chain((item,), iters[level]):
                if isinstance(item, Problem):
                    yield item
                    continue
                ctx = {**ctx0, **item[0]}
                if excludes and self._excluded(ctx, hits):
                    continue
                yield ctx, {**rec0, **item[1]}
            level -= 1

    def _excluded(self, ctx: dict[str, Any], hits: list[int] | None) -> bool:
        for i, exclude in enumerate(self.excludes):
            if exclude.matches(ctx):
                if hits is not None:
                    hits[i] += 1
                return True
        return False

    def cells(self, hits: list[int] | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]] | Problem]:
        """Product cells not excluded, then include cells; ``hits`` counts drops per exclude."""
        yield from self._product(hits)
        for inc in self.includes:
            yield {**self.base, **inc.assign}, dict(inc.record)

    # ---- jobs ------------------------------------------------------------------------

    def _problem(self, field_name: str, rec: dict[str, Any], message: str,
                 path: YamlPath | None = None) -> Problem:
        """Point at the data-file line a value came from, else at where the manifest sets it."""
        axis = self.set_by.get(field_name)
        if axis is not None and path is None:
            source = rec.get(f"{axis.name}_source")
            if source is not None and getattr(axis, "shown", None):
                line = int(str(source).rsplit(":", 1)[1])
                return Problem(axis.shown, line, 0, f"{axis.name}", message)  # type: ignore[attr-defined]
            path = axis.path
        if path is None:
            path = self.origins.get(field_name, ())
        return self.src.problem(path, message, field_name=field_name)

    def _render(self, tmpl: Template, values: dict[str, Any], index: int) -> str | Problem:
        try:
            return tmpl.render(values)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            return self.src.problem(tmpl.path, f"job {index}: cannot render {tmpl.source!r}: {exc}")

    def iter_jobs(self, hits: list[int] | None = None,
                  cells: Iterable[tuple[Any, ...] | Problem] | None = None,
                  light: int | None = None,
                  seen: set[bytes] | None = None) -> Iterator[Job | Problem | int]:
        """One full pass: Jobs in expansion order, Problems where a cell cannot become one.

        ``cells`` (manifest/order.py) gives the cells in another order, each with its written
        index, so a job is the same whatever the order.

        ``light`` (a count, for a pass that only counts and checks, like ``plan``'s): after
        that many Jobs, jobs that are the first of their request, whose file name is their id
        and whose caption is no template, are yielded as a count (an int: that many more
        jobs). They are checked and hashed like any other (their ids still number the
        replicas after them), but nothing they could fail on is left, so no Job is made for
        them: building one cost as much as the job's hash. Replicas are always whole Jobs.
        Such a pass takes the innermost axis value by value where it can (manifest/lean.py).

        ``seen``: the set the pass keeps the first 8 bytes of each distinct request's sha256
        in (a new one if None), added in job order: a caller can read the ids after the pass."""
        st = PassState(set() if seen is None else seen, light or 0,
                       light is not None and self.filename.by_job_id
                       and not isinstance(self.caption, Template))
        if cells is None:
            if st.lean and self.repeat == 1 and not self.excludes and self.axes \
                    and lean_axis(self.axes[-1]):
                return lean_jobs(self, st)
            return self.jobs_of(st, self.cells(hits))
        return self.jobs_of(st, cells, indexed=True)

    def jobs_of(self, st: PassState, cells: Iterable[tuple[Any, ...] | Problem],
                indexed: bool = False) -> Iterator[Job | Problem | int]:
        """The jobs of ``cells`` (``(ctx, rec)``, or ``(ctx, rec, index)`` when ``indexed``),
        numbered and told apart with the pass's state ``st``, which it carries on."""
        model, batch, repeat = self.model, self.batch, self.repeat
        takes_loras = model == LORA_MODEL
        sha256 = hashlib.sha256
        fname = None if self.filename.by_job_id else self.filename
        by_id = self.filename.by_id
        caption = self.caption
        seen, counts = st.seen, st.counts
        index, whole, lean = st.index, st.whole, st.lean  # Jobs still to make before a lean count
        dumps, sorted_keys = orjson.dumps, _SORTED
        head = self.head
        # Per LoRA set, once (a pass meets few): its variable scales, and whether its scales
        # are all floats orjson writes as ``json`` does. The set is kept beside its id, so
        # the id is never reused for another set while the pass runs.
        lora_facts: dict[int, tuple[LoraSet, tuple[str, ...], bool]] = {}
        facts: tuple[LoraSet, tuple[str, ...], bool] = (NO_LORAS, (), True)  # the last set's
        max_chars = MAX_PROMPT_CHARS
        for cell in cells:
            if isinstance(cell, Problem):
                yield cell
                continue
            ctx, rec = cell[0], cell[1]
            if indexed:
                index = cell[2]
            prompt = ctx["prompt"]
            if type(prompt) is Template:
                try:
                    prompt = prompt.render(ctx)
                except (KeyError, ValueError, TypeError, IndexError):
                    yield self._render(prompt, ctx, index)  # type: ignore[misc]
                    continue
            if prompt is None or not prompt or prompt.isspace():
                yield self._problem("prompt", rec, f"job {index} has no prompt"
                                    + (" (the template renders empty)" if prompt is not None else ""))
                continue
            if len(prompt) > max_chars:
                yield self._problem("prompt", rec, f"job {index}: the prompt is {len(prompt):,} "
                                                   f"characters long; at most {MAX_PROMPT_CHARS:,} are sent")
                continue
            request: dict[str, Any] = {"prompt": prompt, "seed": ctx["seed"], "size": ctx["size"]}
            plain = True  # every float in the request is one orjson writes as json does
            if takes_loras:
                lset = ctx["loras"]
                if facts[0] is not lset:
                    facts = lora_facts.get(id(lset))  # type: ignore[assignment]
                    if facts is None or facts[0] is not lset:
                        facts = lora_facts[id(lset)] = (lset, lset.variables, _plain_scales(lset))
                if facts[1]:  # scales taken from this cell's variables
                    try:
                        lset = lset.resolve(ctx)
                    except ValueError as exc:
                        yield self._problem(lset.variables[0], rec, f"job {index}: {exc}")
                        continue
                    ctx = {**ctx, "loras": lset}
                    plain = _plain_scales(lset)
                else:
                    plain = facts[2]
                request["loras"] = lset.as_request() if lset.items else []
            url, strength, mask = ctx["image_url"], ctx["strength"], ctx["mask"]
            if url is not None or strength is not None or mask is not None:  # img2img
                bad: Problem | None = None
                for key in ("image_url", "mask"):
                    value = ctx[key]
                    if type(value) is Template:
                        value = self._render(value, ctx, index)
                        if isinstance(value, str):
                            try:
                                check_url(value)
                            except ValueError as exc:
                                value = self._problem(key, rec, f"job {index}: {exc}")
                        if isinstance(value, Problem):
                            bad = value
                            break
                    if key == "image_url":
                        url = value
                    else:
                        mask = value
                if bad is not None:
                    yield bad
                    continue
                if url is not None:
                    request["image_url"] = url
                if strength is not None:
                    request["strength"] = strength
                if mask is not None:
                    request["mask"] = mask
                if url is None and (strength is not None or mask is not None):
                    what = "strength" if strength is not None else "mask"
                    yield self._problem(what, rec, f"job {index}: {what} needs image_url "
                                                   "(img2img/inpainting only)")
                    continue
            request["output_format"] = ctx["output_format"]
            request["enable_base64_output"] = ctx["enable_base64_output"]
            if plain and (strength is None or type(strength) is not float or not strength
                          or 1e-4 <= abs(strength) < 1e16):
                try:  # {"model":...,"request":...}: "model" sorts first
                    body = head + dumps(request, option=sorted_keys) + b"}"
                except (orjson.JSONEncodeError, TypeError):
                    body = canonical(model, request)
            else:
                body = canonical(model, request)
            key = sha256(body).digest()[:8]
            first = 0
            if lean and whole <= 0 and key not in seen:
                seen.add(key)
                index += 1
                yield 1
                if repeat == 1:
                    continue
                first = 1  # the copies are replicas: whole Jobs
            h = key.hex()
            for copy in range(first, repeat):
                if key in seen:
                    replica = counts.get(key, 0) + 1
                    counts[key] = replica
                    job_id = f"{h}-{replica}"
                else:
                    seen.add(key)
                    replica = 0
                    job_id = h
                if copy:
                    request = dict(request)
                    if takes_loras:
                        request["loras"] = ctx["loras"].as_request()
                    rec = dict(rec)
                name, text = by_id(job_id), None
                if fname is not None or caption is not None:
                    values = {**ctx, "prompt": prompt, "image_url": url, "mask": mask,
                              "job_id": job_id, "index": index, "replica": replica, "name": batch}
                    if fname is not None:
                        try:
                            name = fname.render(values)
                        except (KeyError, ValueError, TypeError) as exc:
                            yield self.src.problem(fname.path, f"job {index}: cannot make a file "
                                                               f"name from {fname.source!r}: {exc}")
                            continue
                    if caption is True:
                        text = prompt
                    elif isinstance(caption, Template):
                        rendered = self._render(caption, values, index)
                        if isinstance(rendered, Problem):
                            yield rendered
                            continue
                        text = rendered
                whole -= 1
                yield Job(job_id, index, request, rec, replica, name, text)
                index += 1
        st.index, st.whole = index, whole
