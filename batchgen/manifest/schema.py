"""The manifest document as pydantic v2 models: what a user may write, with descriptions.

These models are the single source of the JSON Schema (`batchgen schema`) and validate the
plain settings; the matrix, include and exclude are checked by builder.py / combos.py, which need
positions and cross-field knowledge, so here they are typed for the schema only. This module
also turns pydantic's errors into located, plain-worded Problems. It never reads files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SkipValidation,
                      ValidationError)

from batchgen.errors import Problem
from batchgen.job import IDENTIFIER
from batchgen.provider.targets import PROVIDERS
from batchgen.manifest.fields import (MAX_CONCURRENCY, MAX_LORAS, MAX_SEED, OUTPUT_FORMATS, SCALE_MAX, SIZE_MAX, SIZE_MIN,
                             check_bool, check_choice, check_output_format, check_prompt,
                             check_seed, check_size, check_strength, check_url, describe,
                             did_you_mean, excerpt)
from batchgen.manifest.templates import DEFAULT_FILENAME, FileNameTemplate, Template
from batchgen.manifest.source import Source, YamlPath, dotted

__all__ = [
    "MAX_EXPANSION",
    "SECRET_KEYS",
    "DynamicSpec",
    "FileSpec",
    "LoraItem",
    "ManifestSpec",
    "MatrixSpec",
    "NamedLoraSet",
    "RandomSpec",
    "RangeSpec",
    "ZipSpec",
    "check_url_template",
    "validation_problems",
]

#: provider -> (base URL, environment variable that holds the key by default)
#: The hard ceiling on one manifest's jobs, whatever expansion_limit says: a plan must end,
#: in bounded memory (docs/security.md). Bigger work is several manifests.
MAX_EXPANSION = 10_000_000
#: Top-level keys that can only mean someone is about to commit their key to a manifest.
SECRET_KEYS = frozenset({"api_key", "apikey", "api-key", "key", "token", "api_token", "secret",
                         "access_token", "bearer", "authorization", "password"})
BATCH_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _base_url(value: Any) -> str:
    """An http(s) URL without a user name or password (those would be stored and printed)."""
    url = check_url(value)
    if "@" in urlsplit(url).netloc:
        raise ValueError("must not carry a user name or password (user:password@host): batchgen "
                         "would store and print them; the API key goes in the environment")
    return url


def _looks_secret(value: str) -> bool:
    """True for what a key looks like: `sk-...`, or long mixed-case random letters and digits."""
    if value.lower().startswith(("sk-", "sk_")):
        return True
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                   any(c.isdigit() for c in value)))
    return len(value) >= 20 and classes == 3


def _env_name(value: Any) -> Any:
    # Never quote the value: if it is a key, the error message must not print it.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be the name of an environment variable (got {describe(value)})")
    if _looks_secret(value) or (not IDENTIFIER.fullmatch(value) and len(value) >= 16):
        raise ValueError("api_key_env must name an environment variable, not hold the key; "
                         "export the key and put the variable's name here, like JIEKOU_API_KEY")
    if not IDENTIFIER.fullmatch(value):
        raise ValueError("must be an environment variable name: letters, digits and _, "
                         "like JIEKOU_API_KEY")
    return value


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _output(value: Any) -> Any:
    """A local folder. An object store URL here would make a local folder named ``s3:``, so
    it is refused with where it goes instead."""
    if isinstance(value, str) and _URL.match(value) and not value.startswith("file://"):
        raise ValueError(f"must be a local folder (got {excerpt(value)}); give an object store "
                         f"on the command line: batchgen run MANIFEST --output {value}")
    return value


def _batch_name(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"must be text (got {describe(value)})")
    if not BATCH_NAME.fullmatch(value) or value.strip(".") == "" or len(value) > 100:
        raise ValueError(f"must be 1-100 of A-Z a-z 0-9 . _ - and not only dots "
                         f"(got {excerpt(value)}); it names the output folder")
    return value


def _fixed(field: str, check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A top-level request field holds one value for every job; a list means a matrix was meant."""
    def validate(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            raise ValueError(f"a top-level {field} is one value for every job; "
                             f"to vary {field} put it under matrix:")
        return check(value)
    return validate


def _template(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        value = check(value)
        Template(value)
        return value
    return validate


def check_url_template(value: Any) -> Any:
    """A URL that may hold `{name}` fields: checked now as far as its literal text allows.

    One that starts with a field (`{base}/cat.png`) can only be checked per job, once rendered.
    """
    if not isinstance(value, str):
        return check_url(value)
    tmpl = Template(value)
    if not tmpl.fields:
        return check_url(tmpl.render({}))
    if not value.startswith("{"):
        check_url(re.sub(r"\{[^{}]*\}", "x", value))
    return value


def _filename(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"must be a text template like \"{{job_id}}\" (got {describe(value)})")
    FileNameTemplate(value)
    return value


#: quoted words YAML would read as a boolean unquoted: as a caption they are a slip, not text
_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n"})


def _caption(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be true (write the prompt) or a text template (got {describe(value)})")
    if value.strip().lower() in _BOOLEAN_WORDS:
        raise ValueError(f"{value!r} in quotes is text, not a boolean: write caption: true (no "
                         f"quotes) to caption each image with its prompt, or a caption template")
    Template(value)
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    return lambda value: check_choice(value, choices)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


class RangeSpec(_Doc):
    """Numbers from `from` to `to` inclusive, every `step` (floats rounded to 10 decimals)."""

    from_: int | float = Field(alias="from", description="first value")
    to: int | float = Field(description="last value (included when a step lands on it)")
    step: int | float = Field(1, description="distance between values, > 0; default 1")


class RandomSpec(_Doc):
    """N reproducible pseudo-random seeds: random.Random(base), values in [0, 2147483647]."""

    random: int = Field(ge=1, description="how many seeds")
    base: int = Field(0, description="seed of the generator: same base, same seeds")


class FileSpec(_Doc):
    """Values from a file next to the manifest: .txt (one value per line), .csv or .jsonl (rows)."""

    file: str = Field(min_length=1, description="path relative to the manifest's folder")


class DynamicSpec(_Doc):
    """Prompts in the dynamic-prompt syntax: {a|b} variants, {2::a|b} weights, __wildcards__."""

    dynamic: str = Field(min_length=1, description="the template, e.g. \"a {red|blue} {car|bike}\"")
    random: int | None = Field(None, ge=1, description="draw this many prompts at random; "
                                                       "omit for every combination")
    base: int = Field(0, description="seed of the random draws: same base, same prompts")
    wildcards: str = Field("wildcards", min_length=1,
                           description="folder of __name__ files (name.txt), relative to the manifest")


class ZipSpec(_Doc):
    """Equal-length lists zipped into rows: {zip: {subject: [a, b], seed: [1, 2]}}."""

    zip: dict[str, list[Any]] = Field(description="name -> list of values; all lists equally long")


class LoraItem(_Doc):
    """One LoRA in a set."""

    path: str = Field(min_length=1, description="URL (or provider path) of the LoRA weights")
    scale: SkipValidation[float | list[float] | RangeSpec | str] = Field(
        1.0, description=f"strength in [0, {SCALE_MAX:g}]; a list or range sweeps it (matrix only); "
                         "\"{variable}\" takes it from a matrix axis or vars")


class NamedLoraSet(_Doc):
    """A LoRA set with a name used in labels, file names and exclude."""

    name: str = Field(min_length=1, description="label of the set")
    loras: list[LoraItem] = Field(max_length=MAX_LORAS, description=f"0..{MAX_LORAS} LoRAs")


LoraSetDoc = list[LoraItem] | NamedLoraSet
Scalar = str | int | float | bool
AxisDoc = list[Scalar | dict[str, Any]] | RangeSpec | RandomSpec | FileSpec | ZipSpec | DynamicSpec


class MatrixSpec(BaseModel):
    """Axes combined as a full product, first axis outermost (schema only)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, AxisDoc]  # type: ignore[assignment]

    prompt: AxisDoc | None = Field(None, description="prompts (templates), {file: prompts.txt}, or "
                                                     "{dynamic: template, random: N, base: B}")
    seed: AxisDoc | None = Field(None, description="seeds: a list, {from, to, step}, or {random: N, base: B}")
    size: AxisDoc | None = Field(None, description='sizes like "1024*1024"')
    loras: list[LoraSetDoc] | None = Field(
        None, description="LoRA sets: [] for none, a list of {path, scale}, or {name, loras}")
    strength: AxisDoc | None = Field(None, description="img2img strengths in [0, 1]")
    image_url: AxisDoc | None = Field(None, description="reference image URLs")


class ManifestSpec(_Doc):
    """A batchgen manifest: settings, fixed request fields, and a matrix of variations."""

    # settings
    name: Annotated[str | None, BeforeValidator(lambda v: None if v is None else _batch_name(v))] = Field(
        None, description="batch name (output folder); default: the manifest file's stem")
    provider: Annotated[Literal["jiekou", "novita"], BeforeValidator(_choice(tuple(PROVIDERS)))] = Field(
        "jiekou", description="API provider")
    base_url: Annotated[str | None, BeforeValidator(lambda v: None if v is None else _base_url(v))] = Field(
        None, description="the provider's base URL: a provider's own host, or one listed in "
                          "BATCHGEN_TRUSTED_HOSTS (others: --base-url)")
    api_key_env: Annotated[str | None, BeforeValidator(_env_name)] = Field(
        None, description="NAME of the environment variable holding the API key "
                          "(default JIEKOU_API_KEY / NOVITA_API_KEY); never the key itself")
    model: Annotated[Literal["z-image-turbo-lora", "z-image-turbo"],
                     BeforeValidator(_choice(("z-image-turbo-lora", "z-image-turbo")))] = Field(
        "z-image-turbo-lora", description="z-image-turbo-lora, or z-image-turbo (no LoRAs)")
    concurrency: int = Field(8, ge=1, le=MAX_CONCURRENCY, description="tasks in flight at the provider")
    rate_limit: int | None = Field(None, ge=1, description="submits per minute (none: no limit of our own)")
    task_timeout: float = Field(1800, gt=0, description="seconds a task may stay unfinished before we stop polling")
    output: Annotated[str | None, BeforeValidator(_output)] = Field(None, min_length=1, description="batch folder; default ./output/<name>; "
                                                               "relative to the current directory")
    filename: Annotated[str, BeforeValidator(_filename)] = Field(
        DEFAULT_FILENAME, description="file name template under images/ (no extension); '/' makes "
                                      "folders; the default spreads images over 4,096 folders")
    caption: Annotated[bool | str | None, BeforeValidator(_caption)] = Field(
        None, description="true: write the prompt to <name>.txt; or a caption template")
    price_per_image: float | None = Field(
        None, ge=0, description="what one image costs, in your account's currency; `plan` then "
                                "estimates the cost of the work to do (no cost shown without it)")
    max_cost: float | None = Field(
        None, gt=0, description="a hard budget for the whole batch, in the currency of "
                                "price_per_image (needed with it): no submit that could pass it is "
                                "sent, and the run ends with exit 5")
    order: Annotated[Literal["written", "spread"], BeforeValidator(_choice(("written", "spread")))] = Field(
        "written", description="written: jobs go out in the manifest's order; spread: interleaved so "
                               "that every prefix samples each axis evenly")
    expansion_limit: int = Field(1_000_000, ge=1, le=MAX_EXPANSION,
                                 description=f"refuse to expand to more jobs than this (at most "
                                             f"{MAX_EXPANSION:,}, the hard ceiling)")
    repeat: int = Field(1, ge=1, description="ask for every cell this many times (replicas)")
    vars: SkipValidation[dict[str, Scalar]] = Field(
        default_factory=dict, description="constant template variables: {name: value}")
    # request fields fixed for every job (matrix axes override them)
    prompt: Annotated[str | None, BeforeValidator(_fixed("prompt", _template(check_prompt)))] = Field(
        None, description="prompt template, e.g. \"a {style} painting of a castle\"")
    seed: Annotated[int, BeforeValidator(_fixed("seed", check_seed))] = Field(
        -1, ge=-1, le=MAX_SEED, description="-1 lets the provider pick")
    size: Annotated[str, BeforeValidator(_fixed("size", check_size))] = Field(
        "1024*1024", description=f'"W*H", each side {SIZE_MIN}..{SIZE_MAX}')
    loras: SkipValidation[LoraSetDoc | None] = Field(
        None, description="one LoRA set for every job: a list of {path, scale}")
    image_url: Annotated[str | None, BeforeValidator(_fixed("image_url", check_url_template))] = Field(
        None, description="reference image URL (img2img)")
    strength: Annotated[float | None, BeforeValidator(_fixed("strength", check_strength))] = Field(
        None, ge=0, le=1, description="img2img strength in [0, 1]; needs image_url")
    mask: Annotated[str | None, BeforeValidator(_fixed("mask", check_url_template))] = Field(
        None, description="inpainting mask URL (white = repaint); needs image_url")
    output_format: Annotated[Literal["jpeg", "png", "webp"], BeforeValidator(
        _fixed("output_format", check_output_format))] = Field(
        "webp", description=" | ".join(OUTPUT_FORMATS))
    enable_base64_output: Annotated[bool, BeforeValidator(_fixed("enable_base64_output", check_bool))] = Field(
        False, description="ask for base64 image data instead of a URL")
    # variations
    matrix: SkipValidation[MatrixSpec | None] = Field(
        None, description="axes: name -> list | range | {random} | {file} | {zip}; full product")
    include: SkipValidation[list[dict[str, Any]] | None] = Field(
        None, description="extra cells added after the product: [{axis: value, ...}]")
    exclude: SkipValidation[list[dict[str, Any]] | None] = Field(
        None, description="cells to drop: a cell matching every key of an entry is dropped")


# ---- pydantic errors -> Problems -------------------------------------------------------

_PLAIN: dict[str, str] = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "dict_type": "must be a mapping of key: value",
    "model_type": "must be a mapping of key: value",
    "model_attributes_type": "must be a mapping of key: value",
    "list_type": "must be a list",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
}


def _plain(err: dict[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    got = f" (got {value:g})" if numeric else ""
    for key, words in (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than")):
        if key in ctx and kind.endswith(("_than", "_equal")):
            return f"must be {words} {ctx[key]:g}{got}"
    if kind == "too_long":
        return f"has too many items (at most {ctx.get('max_length')})"
    if kind in _PLAIN:
        base = _PLAIN[kind]
        if kind in ("string_too_short", "too_short"):
            return base
        if isinstance(value, str) and kind.startswith(("int", "float")) and _looks_numeric(value):
            return (f"{base} (got the text {excerpt(value)}: write numbers without quotes, "
                    "and 1e6 as 1000000, which YAML reads as a number)")
        return f"{base} (got {describe(value)})"
    return err["msg"]


def _looks_numeric(text: str) -> bool:
    try:
        float(text.replace("_", ""))
    except ValueError:
        return False
    return True


def validation_problems(exc: ValidationError, src: Source, prefix: YamlPath,
                        candidates: Callable[[YamlPath], Sequence[str]]) -> list[Problem]:
    """Locate each pydantic error in the YAML and word it plainly.

    pydantic's ``loc`` may hold union branch tags ("int", "function-after[...]"); walking it
    over the raw data keeps only the steps that exist there. ``candidates(parent_path)``
    lists the keys allowed at a place, for "did you mean" on unknown keys.
    """
    found: dict[tuple[YamlPath, str], Problem] = {}
    for err in exc.errors(include_url=False):
        node: Any = src.data
        for step in prefix:
            node = node[step]
        path: list[str | int] = []
        loc = list(err["loc"])
        kind = err["type"]
        last = loc.pop() if kind in ("extra_forbidden", "missing") and loc else None
        for step in loc:
            if isinstance(node, dict) and step in node:
                node = node[step]
                path.append(step)
            elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
                node = node[step]
                path.append(step)
        full = prefix + tuple(path)
        if kind == "extra_forbidden":
            key = str(last)
            problem = src.problem(full + (key,), f"unknown key '{key}'"
                                  + did_you_mean(key, candidates(full)), key=True)
        elif kind == "missing":
            problem = src.problem(full, f"'{last}' is required", field_name=dotted(full + (str(last),)))
        else:
            problem = src.problem(full, _plain(err))
        # Union branches report one error each at the same place: keep the last, most general.
        found[(full, kind if kind in ("extra_forbidden", "missing") else "")] = problem
    return list(found.values())
