"""Loading a manifest: YAML -> checked settings, axes and templates -> a Manifest.

``load_manifest`` reports every problem it can find at once, each at its file and line, and
returns a Manifest only when all of it is usable; ``Manifest.jobs()`` then expands lazily.
Loading never contacts the provider, never reads the API key, and never expands the matrix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchgen.manifest.axes import NO_LORAS, RESERVED, Axis, ListAxis, RangeAxis
from batchgen.manifest.builder import AxisBuilder
from batchgen.errors import ManifestError, Problem
from batchgen.manifest.fields import (LORA_MODEL, REQUEST_FIELDS, TEMPLATED_FIELDS, check_scale, describe,
                                      did_you_mean)
from batchgen.job import IDENTIFIER, Job
from batchgen.manifest.combos import parse_excludes, parse_includes
from batchgen.manifest.expand import Expansion
from batchgen.provider.targets import PROVIDERS
from batchgen.manifest.schema import BATCH_NAME, MAX_EXPANSION, SECRET_KEYS, ManifestSpec, validation_problems
from batchgen.manifest.templates import DEFAULT_FILENAME, FileNameTemplate, Template
from batchgen.manifest.source import Source, YamlPath, load_yaml

__all__ = ["Manifest", "ManifestSpec", "load_manifest", "manifest_json_schema"]

_SECRET_MESSAGE = ("never put the API key in a manifest; export it and name the variable "
                   "in api_key_env")
#: Request fields a prompt/URL template may use (the templated ones would be circular).
_REQUEST_TEMPLATE_FIELDS = frozenset(REQUEST_FIELDS) - set(TEMPLATED_FIELDS)
_OUTPUT_ONLY = frozenset(RESERVED) | set(TEMPLATED_FIELDS)


@dataclass(frozen=True, eq=False)
class Manifest:
    """A checked manifest: batch settings, plus ``jobs()``, a restartable lazy job stream."""

    path: Path
    name: str
    model: str
    provider: str
    base_url: str | None
    api_key_env: str | None
    concurrency: int
    rate_limit: int | None
    price_per_image: float | None
    task_timeout: float
    output: Path
    filename: str
    caption: bool | str | None
    repeat: int
    expansion_limit: int
    vars: dict[str, Any]
    expansion: Expansion = field(repr=False)
    #: (axis name, why) for axes whose values cannot change the request
    unused_axes: list[tuple[str, str]] = field(default_factory=list, repr=False)
    max_cost: float | None = None  # the batch's budget, in the currency of price_per_image
    order: str = "written"         # "spread": jobs go out interleaved (manifest/order.py)

    @property
    def axes(self) -> list[Axis]:
        """The matrix axes in product order (first outermost)."""
        return self.expansion.axes

    @property
    def size(self) -> int:
        """Job count before `exclude:` drops any (the expansion_limit is checked against it)."""
        return self.expansion.size

    @property
    def key_variable(self) -> str:
        """Name of the environment variable that holds the API key (never its value)."""
        return self.api_key_env or PROVIDERS[self.provider].key_env

    @property
    def endpoint(self) -> str:
        """Base URL to talk to: the manifest's override or the provider's."""
        return self.base_url or PROVIDERS[self.provider].base_url

    def jobs(self) -> Iterator[Job]:
        """Every job, lazily, in expansion order; each call starts a new pass from scratch.

        Raises ManifestError at the first problem only visible while streaming (a bad row).
        """
        for item in self.expansion.iter_jobs():
            if isinstance(item, Problem):
                raise ManifestError([item])
            yield item

    def submit_order(self) -> Iterator[Job]:
        """Every job in the order a run sends them: written, or ``order: spread``."""
        if self.order != "spread":
            yield from self.jobs()
            return
        from batchgen.manifest.order import spread_jobs

        for item in spread_jobs(self.expansion):
            if isinstance(item, Problem):
                raise ManifestError([item])
            yield item

    def expand(self, exclude_hits: list[int] | None = None,
               light: int | None = None) -> Iterator[Job | Problem | int]:
        """Like ``jobs()`` but yields problems instead of raising, so a caller can list many
        (``light``: see ``Expansion.iter_jobs``, an int is a count of jobs; without it every item
        is a Job or a Problem)."""
        return self.expansion.iter_jobs(exclude_hits, light=light)


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema of the manifest, for editors (VS Code's YAML extension) and docs."""
    schema = ManifestSpec.model_json_schema(by_alias=True)
    schema["title"] = "batchgen manifest"
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read, check and prepare a manifest; raises ManifestError listing every problem found."""
    path = Path(path)
    shown = str(path)
    src = load_yaml(path, shown)
    if not isinstance(src.data, dict):
        line, col = src.where(())
        raise ManifestError([Problem(shown, line, col, "",
                                     f"a manifest is a mapping of key: value (found {describe(src.data)})")])
    return _Loader(path, src).load()


class _Loader:
    """One load: collects problems from every check, then builds the Manifest or raises."""

    def __init__(self, path: Path, src: Source) -> None:
        self.path = path
        self.src = src
        self.problems: list[Problem] = []
        self.templates: list[tuple[YamlPath, Template]] = []
        # Names we cannot vouch for because the place that defines them is already reported
        # broken: no second error about them ("unknown field {style}" after a bad style axis).
        self.unsure: set[str] = set()
        self.unsure_all = False

    def fail(self, path: YamlPath, message: str, *, key: bool = False) -> None:
        self.problems.append(self.src.problem(path, message, key=key))

    def load(self) -> Manifest:
        data: dict[str, Any] = self.src.data
        spec = self._spec(data)
        name = self._batch_name(spec)
        vars_ = self._vars(data.get("vars"))
        # Data files are read by absolute path (a later chdir must not lose them) but shown
        # relative to how the user named the manifest.
        builder = AxisBuilder(self.src, self.path.parent.absolute(), Path(self.src.file).parent,
                              spec.model == LORA_MODEL, spec.expansion_limit, self.problems,
                              self.templates)
        base = self._base(spec, data, builder, vars_)
        axes = self._axes(data, builder, vars_)
        set_by = {n: ax for ax in axes for n in ax.sets}
        loras = {entry[0]["loras"].label: entry[0]["loras"]
                 for ax in axes if ax.name == "loras" for entry in ax}  # type: ignore[union-attr]
        known = {**{f: "field" for f in REQUEST_FIELDS}, **{v: "vars" for v in vars_},
                 **{n: ax.name for n, ax in set_by.items()}}
        lenient = self.unsure_all or bool(self.unsure & {"matrix", "vars"})
        includes = parse_includes(data.get("include"), builder, known, loras, self.unsure, lenient)
        excludes = parse_excludes(data.get("exclude"), builder,
                                  {n: ax.name for n, ax in set_by.items()}, loras,
                                  self.unsure, lenient)
        filename = self._template(FileNameTemplate, spec.filename, ("filename",))
        caption: Template | bool | None = spec.caption
        if isinstance(spec.caption, str):
            caption = self._template(Template, spec.caption, ("caption",))
        out_templates = [t for t in (filename, caption) if isinstance(t, (Template, FileNameTemplate))]
        variables = set(vars_) | {n for n in set_by if n not in REQUEST_FIELDS}
        self._check_scale_variables(builder, set_by, vars_)
        self._check_template_fields(variables, out_templates)
        self._check_prompt_and_images(base, set_by, includes, data)
        self._check_includes(includes, base, set_by, vars_, out_templates)
        unused = self._unused_axes(axes, out_templates, {n for n, _ in builder.scale_variables})
        if spec.max_cost is not None and spec.price_per_image is None:
            self.fail(("max_cost",), "needs price_per_image (the budget is counted in images at "
                                     "that price)", key=True)
        expansion = None
        if not self.problems:
            expansion = Expansion(
                src=self.src, model=spec.model, batch=name, base=base, axes=axes,
                includes=includes, excludes=excludes, repeat=spec.repeat,
                filename=filename or FileNameTemplate(DEFAULT_FILENAME), caption=caption,
                origins={f: (f,) for f in REQUEST_FIELDS if f in data})
            if expansion.size > MAX_EXPANSION:
                self.fail(("matrix",) if "matrix" in data else (),
                          f"this manifest expands to {expansion.size:,} jobs, over the ceiling of "
                          f"{MAX_EXPANSION:,} jobs one manifest may have; split the work into "
                          f"several manifests", key=True)
            elif expansion.size > spec.expansion_limit:
                self.fail(("matrix",) if "matrix" in data else (),
                          f"this manifest expands to {expansion.size:,} jobs, over expansion_limit "
                          f"({spec.expansion_limit:,}); if you mean it, set expansion_limit: "
                          f"{expansion.size} at the top of the manifest", key=True)
        if self.problems or expansion is None:
            raise ManifestError(self._sorted())
        return Manifest(
            path=self.path, name=name, model=spec.model, provider=spec.provider,
            base_url=spec.base_url, api_key_env=spec.api_key_env, concurrency=spec.concurrency,
            rate_limit=spec.rate_limit, price_per_image=spec.price_per_image, task_timeout=float(spec.task_timeout),
            output=_output_folder(spec.output, name, self.path), filename=spec.filename, caption=spec.caption,
            repeat=spec.repeat, expansion_limit=spec.expansion_limit, vars=vars_,
            expansion=expansion, unused_axes=unused, max_cost=spec.max_cost, order=spec.order)

    def _sorted(self) -> list[Problem]:
        """File order: the manifest first, line by line, then data files, line by line."""
        unique = list(dict.fromkeys(self.problems))
        return sorted(unique, key=lambda p: (p.file != self.src.file, p.file, p.line, p.col))

    # ---- settings --------------------------------------------------------------------

    def _spec(self, data: dict[str, Any]) -> ManifestSpec:
        """Top-level keys through pydantic; a broken setting falls back to its default so the
        rest of the manifest is still checked in the same run."""
        allowed = [f.alias or n for n, f in ManifestSpec.model_fields.items()]
        clean = {}
        for key, value in data.items():
            if key.lower() in SECRET_KEYS:
                self.fail((key,), _SECRET_MESSAGE, key=True)
            elif key not in allowed:
                self.unsure.add(key)
                hint = did_you_mean(key, allowed)
                if not hint and IDENTIFIER.fullmatch(key):
                    hint = (f"; to vary {key}, put it under matrix:; for one value in templates, "
                            "put it under vars:")
                self.fail((key,), f"unknown key '{key}'{hint}", key=True)
            else:
                clean[key] = value
        try:
            return ManifestSpec.model_validate(clean)
        except ValidationError as exc:
            self.problems.extend(validation_problems(exc, self.src, (), lambda p: allowed))
            broken = {err["loc"][0] for err in exc.errors() if err["loc"]}
            self.unsure.update(str(b) for b in broken)
            return ManifestSpec.model_validate({k: v for k, v in clean.items() if k not in broken})

    def _batch_name(self, spec: ManifestSpec) -> str:
        if spec.name is not None:
            return spec.name
        stem = self.path.stem
        if not BATCH_NAME.fullmatch(stem) or stem.strip(".") == "":
            self.problems.append(Problem(self.src.file, 1, 1, "name",
                                         f"the file name {stem!r} cannot name the batch folder; "
                                         "add name: with letters, digits, . _ -"))
            return "batch"
        return stem

    def _vars(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(("vars",), f"must be a mapping of name: value (got {describe(raw)})")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            path = ("vars", key)
            if key.lower() in SECRET_KEYS:
                self.fail(path, _SECRET_MESSAGE, key=True)
            elif not IDENTIFIER.fullmatch(key):
                self.fail(path, "a variable name is letters, digits and _, not starting with a digit",
                          key=True)
            elif key in RESERVED or key in REQUEST_FIELDS:
                self.fail(path, f"'{key}' is a request field or filled in by batchgen; "
                                "pick another variable name", key=True)
            elif value is None or isinstance(value, (list, dict)):
                self.fail(path, f"a variable holds text, a number or true/false (got {describe(value)})")
            else:
                out[key] = value
        return out

    def _template(self, kind: type[Any], source: str, path: YamlPath) -> Any:
        try:
            tmpl = kind(source, path)
        except ValueError as exc:  # pragma: no cover - already checked by the spec
            self.fail(path, str(exc))
            return None
        self.templates.append((path, tmpl))
        return tmpl

    def _base(self, spec: ManifestSpec, data: dict[str, Any], builder: AxisBuilder,
              vars_: dict[str, Any]) -> dict[str, Any]:
        """Values every cell starts from: top-level request fields, defaults, and vars."""
        base: dict[str, Any] = dict(vars_)
        for key in ("seed", "size", "strength", "output_format", "enable_base64_output"):
            base[key] = getattr(spec, key)
        for key in TEMPLATED_FIELDS:
            value = getattr(spec, key)
            if isinstance(value, str) and ("{" in value or "}" in value):
                value = self._template(Template, value, (key,))
            base[key] = value
        base["loras"] = NO_LORAS
        if data.get("loras") is not None:
            sets = builder.lora_sets(data["loras"], ("loras",), fixed=True)
            if sets:
                base["loras"] = sets[0]
        return base

    def _axes(self, data: dict[str, Any], builder: AxisBuilder, vars_: dict[str, Any]) -> list[Axis]:
        if "matrix" not in data:
            return []
        raw = data["matrix"]
        if raw is None:  # `matrix:` with nothing under it: an axis was meant, not one job
            self.fail(("matrix",), "matrix is empty (nothing under matrix:); give at least one "
                                   "axis, or remove matrix:")
            return []
        if not isinstance(raw, dict):
            self.fail(("matrix",), f"must be a mapping of axis: values (got {describe(raw)})")
            return []
        if not raw:
            self.fail(("matrix",), "matrix is empty; give at least one axis, or remove matrix:")
            return []
        axes: list[Axis] = []
        owner: dict[str, Axis] = {}
        for name, spec in raw.items():
            axis = builder.axis(name, spec, ("matrix", name))
            if axis is None:
                self.unsure.add(name)
                if isinstance(spec, dict) or (isinstance(spec, list) and spec
                                              and isinstance(spec[0], dict)):
                    self.unsure_all = True  # rows whose keys we never learnt
                continue
            clash = next((n for n in axis.sets if n in owner or n in vars_), None)
            if clash is not None:
                other = (f"axis '{owner[clash].name}' (line {self.src.where(owner[clash].path)[0]})"
                         if clash in owner else "vars:")
                self.fail(("matrix", name), f"'{clash}' is already set by {other}; two places "
                                            "may not set the same name", key=True)
                continue
            owner.update({n: axis for n in axis.sets})
            axes.append(axis)
        return axes

    # ---- cross checks ----------------------------------------------------------------

    def _check_scale_variables(self, builder: AxisBuilder, set_by: dict[str, Axis],
                               vars_: dict[str, Any]) -> None:
        """A LoRA scale written ``"{name}"`` needs a matrix variable or a vars entry of that
        name whose values are scales; values written in the manifest are checked here, values
        from data files as each job is made."""
        checked: set[str] = set()
        for name, path in builder.scale_variables:
            if name in self.unsure or self.unsure_all:
                continue
            axis = set_by.get(name)
            if name in REQUEST_FIELDS or (axis is None and name not in vars_):
                known = sorted(set(vars_) | {n for n in set_by if n not in REQUEST_FIELDS})
                self.fail(path, f"a LoRA scale takes {{{name}}}, but no matrix axis or vars entry "
                                f"is called {name!r}" + did_you_mean(name, known)
                          + (f" (variables: {', '.join(known)})" if known else
                             "; add it under matrix:, e.g. " + name + ": [0.5, 1.0]"))
                continue
            if name in checked:
                continue
            checked.add(name)
            if axis is None:
                self._check_scale_value(vars_[name], ("vars", name))
            elif isinstance(axis, RangeAxis):
                last = axis.start + (axis.size - 1) * axis.step
                self._check_scale_value(axis.start, axis.path + ("from",))
                self._check_scale_value(round(last, 10), axis.path + ("to",))
            elif isinstance(axis, ListAxis) and axis.name == name:
                for i, (assign, _) in enumerate(axis.entries):
                    if not self._check_scale_value(assign.get(name), axis.path + (i,)):
                        break

    def _check_scale_value(self, value: Any, path: YamlPath) -> bool:
        try:
            check_scale(value)
        except ValueError as exc:
            self.fail(path, f"used as a LoRA scale: {exc}")
            return False
        return True

    def _check_template_fields(self, variables: set[str],
                               out_templates: list[Template | FileNameTemplate]) -> None:
        """Every `{field}` must be something a job has; say where it is not."""
        in_request = variables | _REQUEST_TEMPLATE_FIELDS
        in_output = in_request | _OUTPUT_ONLY
        for path, tmpl in self.templates:
            output = any(tmpl is t for t in out_templates)
            allowed = in_output if output else in_request
            for name in tmpl.fields:
                if name in allowed or name in self.unsure or self.unsure_all:
                    continue
                if name in _OUTPUT_ONLY:
                    msg = (f"{{{name}}} is not available here: prompt, image_url and mask may use "
                           "variables and seed, size, strength, loras, output_format; "
                           f"{{{name}}} works in filename and caption")
                else:
                    known = sorted(allowed)
                    msg = (f"unknown template field {{{name}}}" + did_you_mean(name, known)
                           + f" (known: {', '.join(known)})")
                self.fail(path, msg)

    def _check_prompt_and_images(self, base: dict[str, Any], set_by: dict[str, Axis],
                                 includes: list[Any], data: dict[str, Any]) -> None:
        if (base["prompt"] is None and "prompt" not in set_by and not includes
                and not self.unsure_all and "prompt" not in data
                and not did_you_mean("prompt", self.unsure)):  # a misspelt prompt: is reported
            self.problems.append(Problem(self.src.file, 1, 1, "prompt",
                                         "no prompt: set prompt: at the top level, as a matrix "
                                         "axis, or as a column of a rows file"))
        if "image_url" not in set_by and base["image_url"] is None:
            for key in ("strength", "mask"):
                if base[key] is not None and key in data:
                    self.fail((key,), f"{key} needs image_url (img2img/inpainting only)")

    def _check_includes(self, includes: list[Any], base: dict[str, Any], set_by: dict[str, Axis],
                        vars_: dict[str, Any], out_templates: list[Any]) -> None:
        """An include cell has no axis values: every variable its templates use must be given."""
        for inc in includes:
            cell = {**base, **inc.assign}
            if cell["prompt"] is None:
                self.fail(inc.path, "this include has no prompt and there is no top-level prompt")
                continue
            if cell["image_url"] is None:  # an include cell takes no axis values: known now
                for key in ("strength", "mask"):
                    if cell[key] is not None:
                        where = inc.path + (key,) if key in inc.assign else inc.path
                        self.fail(where, f"{key} needs image_url (img2img/inpainting only); "
                                         "give this include an image_url")
                        break
            templates = [cell[k] for k in TEMPLATED_FIELDS if isinstance(cell[k], Template)]
            needed = {n for t in templates + out_templates for n in t.fields}
            needed |= set(cell["loras"].variables)  # a LoRA scale taken from a variable
            missing = sorted(n for n in needed - set(cell) - _OUTPUT_ONLY if n in set_by)
            if self.unsure_all:
                continue
            if missing:
                self.fail(inc.path, f"this include gives no value for {', '.join(missing)}, "
                                    "which a template or LoRA scale uses; add it to the entry")

    def _unused_axes(self, axes: list[Axis], out_templates: list[Template | FileNameTemplate],
                     scale_variables: set[str]) -> list[tuple[str, str]]:
        """Axes whose values never reach a request make identical requests: say so (or fail,
        when the name looks like a misspelt request field)."""
        in_request = {n for _, t in self.templates if not any(t is o for o in out_templates)
                      for n in t.fields} | scale_variables
        in_output = {n for t in out_templates for n in t.fields}
        unused = []
        for axis in axes:
            if any(n in REQUEST_FIELDS or n in in_request for n in axis.sets):
                continue
            if any(n in in_output for n in axis.sets):
                unused.append((axis.name, "only changes file names/captions: its cells repeat "
                                          "the same request"))
                continue
            hint = did_you_mean(axis.name, REQUEST_FIELDS)
            if hint and axis.kind != "rows":
                self.fail(("matrix", axis.name),
                          f"'{axis.name}' is not a request field and no template uses "
                          f"{{{axis.name}}}{hint}", key=True)
                continue
            unused.append((axis.name, "is not used by any template: its values produce "
                                      "identical requests"))
        return unused


def _output_folder(output: str | None, name: str, manifest: Path) -> Path:
    """Where the manifest's batch lives: a relative `output:` and the default `output/<name>`
    resolve against the manifest's own folder, so the same manifest finds the same batch from
    any working directory (a second batch folder would pay for every job again). Only
    ``--output`` on the command line is relative to where batchgen runs."""
    base = manifest.parent.absolute()
    if output is None:
        return Path(os.path.abspath(base / "output" / name))
    return Path(os.path.abspath(base / os.path.expanduser(output)))