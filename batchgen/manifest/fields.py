"""The provider's rules for each submit-body field (as its API documents them), in one place.

Every value that can reach a request passes through these checks, whether it was written in
the manifest or read from a data file, so a rule is never written twice. Each check returns
the normalized value or raises ValueError with a message for a person; it never echoes more
than a short excerpt of the value, and never reads files or knows about YAML.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "FIELD_CHECKS",
    "LORA_MODEL",
    "MAX_CONCURRENCY",
    "MAX_LORAS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "REQUEST_FIELDS",
    "SCALE_MAX",
    "SIZE_MAX",
    "SIZE_MIN",
    "TEMPLATED_FIELDS",
    "check_bool",
    "check_choice",
    "check_output_format",
    "check_prompt",
    "check_scale",
    "check_seed",
    "check_size",
    "check_strength",
    "check_url",
    "describe",
    "did_you_mean",
    "excerpt",
    "from_text",
]

MAX_SEED = 2147483647
#: Tasks in flight batchgen keeps at most, from a manifest or the command line alike.
MAX_CONCURRENCY = 1000
SIZE_MIN, SIZE_MAX = 256, 1536
MAX_LORAS = 3
SCALE_MAX = 4.0
OUTPUT_FORMATS = ("jpeg", "png", "webp")
LORA_MODEL = "z-image-turbo-lora"
REQUEST_FIELDS = ("prompt", "seed", "size", "loras", "image_url", "strength", "mask",
                  "output_format", "enable_base64_output")
#: Fields whose manifest-written values may hold `{name}` template fields.
TEMPLATED_FIELDS = ("prompt", "image_url", "mask")

_SIZE = re.compile(r"(\d+)\*(\d+)")
_SIZE_X = re.compile(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*")


def describe(value: Any) -> str:
    """A value's kind in plain words, for "must be X (got Y)" messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def excerpt(value: Any, limit: int = 40) -> str:
    """repr() of a value, cut short: messages quote what was written without flooding."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(word: str, candidates: Any) -> str:
    """`"; did you mean 'x'?"` when a close candidate exists, else `""`."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number (got {describe(value)})")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{what} must be a finite number")
    return float(value)


#: the longest prompt sent (characters): one request, one ledger line, one sidecar stay small
MAX_PROMPT_CHARS = 20_000


def check_prompt(value: Any) -> str:
    """A prompt is non-empty text (the provider rejects an empty one after we paid nothing),
    at most MAX_PROMPT_CHARS long."""
    if not isinstance(value, str):
        raise ValueError(f"must be text (got {describe(value)})")
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"is {len(value):,} characters long; at most {MAX_PROMPT_CHARS:,} are sent")
    return value


def check_seed(value: Any) -> int:
    """Seeds are whole numbers in [-1, 2147483647]; -1 lets the provider pick."""
    if isinstance(value, bool) or not isinstance(value, int):
        got = excerpt(value) if isinstance(value, float) else describe(value)
        raise ValueError(f"must be a whole number (got {got})")
    if not -1 <= value <= MAX_SEED:
        raise ValueError(f"must be between -1 and {MAX_SEED} (got {value})")
    return value


def check_size(value: Any) -> str:
    """Sizes are "W*H" with each side 256..1536, exactly as the API spells them."""
    if not isinstance(value, str):
        raise ValueError(f"must be text like \"1024*1024\" (got {describe(value)})")
    m = _SIZE.fullmatch(value)
    if m is None:
        x = _SIZE_X.fullmatch(value)
        if x:
            raise ValueError(f"write sizes as width*height, like \"{x[1]}*{x[2]}\" "
                             f"(got {excerpt(value)})")
        raise ValueError(f"must be width*height in pixels, like \"1024*1024\" (got {excerpt(value)})")
    w, h = int(m[1]), int(m[2])
    if not (SIZE_MIN <= w <= SIZE_MAX and SIZE_MIN <= h <= SIZE_MAX):
        raise ValueError(f"each side must be {SIZE_MIN}..{SIZE_MAX} pixels (got {excerpt(value)})")
    return value


def check_strength(value: Any) -> float:
    """img2img strength is a number in [0, 1]."""
    v = _number(value, "strength")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"must be between 0 and 1 (got {value})")
    return v


def check_scale(value: Any) -> float:
    """A LoRA scale is a number in [0, 4]."""
    v = _number(value, "scale")
    if not 0.0 <= v <= SCALE_MAX:
        raise ValueError(f"must be between 0 and {SCALE_MAX:g} (got {value})")
    return v


def check_choice(value: Any, choices: tuple[str, ...]) -> str:
    """One of a fixed set of words, with a did-you-mean for near misses."""
    if not isinstance(value, str):
        raise ValueError(f"must be one of {', '.join(choices)} (got {describe(value)})")
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)} (got {excerpt(value)})"
                         + did_you_mean(value.lower(), choices))
    return value


def check_output_format(value: Any) -> str:
    """jpeg, png or webp; `jpg` is the usual slip."""
    if value == "jpg":
        raise ValueError("must be one of jpeg, png, webp (got 'jpg'); did you mean 'jpeg'?")
    return check_choice(value, OUTPUT_FORMATS)


def check_bool(value: Any) -> bool:
    """A real boolean: a quoted "true" is text, and text in a switch is usually a mistake."""
    if not isinstance(value, bool):
        hint = " without quotes" if isinstance(value, str) else ""
        raise ValueError(f"must be true or false{hint} (got {describe(value)})")
    return value


def check_url(value: Any) -> str:
    """An http(s) URL: the provider fetches it, so a local path can never work."""
    if not isinstance(value, str):
        raise ValueError(f"must be an http(s) URL (got {describe(value)})")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError(f"must be an http:// or https:// URL (got {excerpt(value)})")
    return value


FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "prompt": check_prompt,
    "seed": check_seed,
    "size": check_size,
    "image_url": check_url,
    "strength": check_strength,
    "mask": check_url,
    "output_format": check_output_format,
    "enable_base64_output": check_bool,
}

_TRUE = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def from_text(name: str, text: str) -> Any:
    """Turn text read from a .txt or .csv file into the typed value of request field ``name``.

    Files carry only text, so this is the one place where "42" may become the seed 42.
    """
    if name == "seed":
        try:
            return check_seed(int(text.strip()))
        except ValueError as exc:
            if "between" in str(exc):
                raise
            raise ValueError(f"must be a whole number (got {excerpt(text)})") from None
    if name == "strength":
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"must be a number (got {excerpt(text)})") from None
        return check_strength(number)
    if name == "enable_base64_output":
        flag = _TRUE.get(text.strip().lower())
        if flag is None:
            raise ValueError(f"must be true or false (got {excerpt(text)})")
        return flag
    check = FIELD_CHECKS.get(name)
    return check(text) if check else text
