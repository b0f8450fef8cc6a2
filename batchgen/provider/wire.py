"""The provider's answers, parsed tolerantly.

The docs, the official SDK and the live service disagree on types (``extra.seed`` as string or
int, ``debug_info`` fields empty or numeric, ``eta`` int, float or missing) and add fields over
time. Parsing here accepts all of those and never fails on a field we do not need.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batchgen.safetext import clean_text

__all__ = ["DONE_STATUSES", "MAX_SEED", "ResultImage", "TaskResult", "parse_task_result", "usable_seed"]

SUCCEED = "TASK_STATUS_SUCCEED"
FAILED = "TASK_STATUS_FAILED"
QUEUED = "TASK_STATUS_QUEUED"
PROCESSING = "TASK_STATUS_PROCESSING"
DONE_STATUSES = frozenset({SUCCEED, FAILED})


def _number_or_none(value: Any) -> float | None:
    """Finite numbers and numeric strings -> float; "", None, nan, 1e999, garbage -> None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TaskInfo(_Lenient):
    task_id: str = ""
    status: str = ""
    reason: str = ""
    task_type: str = ""
    eta: float | None = None
    progress_percent: float | None = None

    @field_validator("task_id", "status", "reason", "task_type", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @field_validator("eta", "progress_percent", mode="before")
    @classmethod
    def _hint(cls, value: Any) -> float | None:
        number = _number_or_none(value)
        return number if number is not None and number >= 0 else None


class ResultImage(_Lenient):
    """One produced image: a pre-signed URL on another host, or base64 data in the same field."""

    image_url: str = ""
    image_url_ttl: float | None = None
    image_type: str = ""
    nsfw_detection_result: dict[str, Any] | None = None

    @field_validator("image_url", "image_type", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @field_validator("nsfw_detection_result", mode="before")
    @classmethod
    def _nsfw(cls, value: Any) -> dict[str, Any] | None:
        """``{"valid": bool, "confidence": number}`` as the provider's SDK reads it; only
        those two keys are kept, each only when of its type (``{}``, as the docs show when
        detection is off, is None: nothing was said)."""
        if not isinstance(value, dict):
            return None
        kept: dict[str, Any] = {}
        if isinstance(value.get("valid"), bool):
            kept["valid"] = value["valid"]
        confidence = _number_or_none(value.get("confidence"))
        if confidence is not None and not isinstance(value.get("confidence"), bool) \
                and 0.0 <= confidence <= 1.0:
            kept["confidence"] = confidence
        return kept or None

    @field_validator("image_url_ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> float | None:
        return _number_or_none(value)


#: seeds a request may carry (API.md): a seed outside can never be sent back, so it is no seed
MAX_SEED = 2_147_483_647


def usable_seed(value: Any) -> int | None:
    """A seed as the provider reports it (an integer or a numeric string) when it is a whole
    number a request could carry again ([-1, MAX_SEED]); otherwise None."""
    if isinstance(value, str) and len(value) > 40:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number: Any = value
    else:
        number = _number_or_none(value)
        if number is None or not number.is_integer():
            return None
    return int(number) if -1 <= number <= MAX_SEED else None


class Extra(_Lenient):
    seed: int | None = None
    #: the provider's seed when it was there but unusable (out of range, not a number), cut short
    seed_unusable: str | None = None
    debug_info: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _seed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data.pop("seed_unusable", None)
        raw = data.get("seed")
        seed = usable_seed(raw)
        data["seed"] = seed
        if seed is None and raw not in (None, ""):
            try:
                text = str(raw) if isinstance(raw, (str, int, float)) else type(raw).__name__
            except ValueError:  # an integer too long to print
                text = "a huge integer"
            data["seed_unusable"] = clean_text(text, 40)
        return data

    @field_validator("debug_info", mode="before")
    @classmethod
    def _debug(cls, value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}


class TaskResult(_Lenient):
    """``GET /v3/async/task-result`` as far as a batch runner needs it."""

    task: TaskInfo = Field(default_factory=TaskInfo)
    extra: Extra = Field(default_factory=Extra)
    images: list[ResultImage] = Field(default_factory=list)

    @field_validator("task", "extra", mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, value: Any) -> list[Any]:
        return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []

    @property
    def status(self) -> str:
        return self.task.status

    @property
    def finished(self) -> bool:
        return self.task.status in DONE_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.task.status == SUCCEED

    @property
    def failed(self) -> bool:
        return self.task.status == FAILED

    def debug_ms(self, name: str) -> float | None:
        """A ``debug_info`` timestamp in ms, when the provider filled it with a number."""
        return _number_or_none(self.extra.debug_info.get(name))

    def provider_duration(self) -> float | None:
        """Seconds from submit to completion by the provider's own clock, if it says."""
        start, end = self.debug_ms("submit_time_ms"), self.debug_ms("complete_time_ms")
        if start is None or end is None or not 0 <= end - start < 86_400_000:
            return None
        return (end - start) / 1000.0


def parse_task_result(data: Any) -> TaskResult:
    """Parse a decoded JSON answer; anything that is not an object becomes an empty result."""
    return TaskResult.model_validate(data if isinstance(data, dict) else {})
