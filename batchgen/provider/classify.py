"""What a provider's error answer means for a batch: decided by ``reason`` first, status second.

Sources disagree on status codes (a balance error is 400 in one place and 403 in another), so
the reason code is the stronger signal. Every message says what happened and what to do, and
carries no secret (provider text is scrubbed by the caller's key before it gets here).
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

from batchgen.errors import (
    AuthError,
    BalanceError,
    BatchStopped,
    JobRejected,
    ProviderError,
    RateLimited,
    StopKind,
    TaskNotFound,
    TransientError,
)
from batchgen.safetext import clean_text

__all__ = ["classify_error", "parse_retry_after", "retry_after_of"]

INVALID_JOB = frozenset({
    "INVALID_REQUEST_BODY", "INVALID_IMAGE_SIZE", "IMAGE_EXCEEDS_MAX_RESOLUTION",
    "INVALID_IMAGE_FORMAT", "IMAGE_FILE_EXCEEDS_MAX_SIZE", "ILLEGAL_PROMPT", "ILLEGAL_IMAGE_CONTENT",
})
BALANCE = frozenset({"BILLING_BALANCE_NOT_ENOUGH", "NOT_ENOUGH_BALANCE"})
AUTH = frozenset({
    "MISSING_API_KEY", "FAILED_TO_AUTH", "INVALID_API_KEY", "API_NOT_ALLOWED",
    "BILLING_AUTH_FAILED", "NEED_REAL_NAME_VERIFY",
})
RATE = frozenset({"RATE_LIMIT_EXCEEDED"})
TRANSIENT = frozenset({
    "CREATE_TASK_FAILED", "GET_RESULT_FAILED", "BILLING_FAILED", "TASK_FAILED", "SERVICE_NOT_AVAILABLE",
})

KNOWN = INVALID_JOB | BALANCE | AUTH | RATE | TRANSIENT | {"TASK_NOT_FOUND", "API_NOT_FOUND"}

MAX_RETRY_AFTER = 600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retry_after_of(headers: Any) -> float | None:
    """The wait a 429 asks for: ``retry-after-ms`` (milliseconds, as some APIs send) when it
    is there and a number, else ``Retry-After`` (seconds or an HTTP-date), else None."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000.0
        except ValueError:
            seconds = float("nan")
        if seconds == seconds and seconds != float("inf"):
            return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    return parse_retry_after(headers.get("retry-after"))


def _error_body(content: bytes) -> tuple[str, str]:
    """(reason, message) from a provider error body; empty strings when it is not one."""
    try:
        data: Any = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    reason = data.get("reason")
    message = data.get("message")
    return (str(reason) if reason else "", str(message)[:300] if message else "")


def classify_error(status: int, content: bytes, headers: dict[str, str] | Any, *,
                   key_env: str, base_url: str, scrub=clean_text) -> ProviderError:
    """Turn a non-200 answer into the error whose type tells the scheduler what to do.

    ``scrub`` masks the key in (and cleans) the provider's words, which are stored and printed."""
    reason, message = _error_body(content)
    reason, message = scrub(reason)[:100], scrub(message)
    said = f"{status} {reason}".strip() + (f": {message}" if message else "")
    unknown = reason not in KNOWN  # an unknown (or missing) reason: the status decides

    if reason in BALANCE:
        return BalanceError(
            f"the account is out of credit ({said}). Top up at the provider, then run the same "
            f"command again; tasks already paid for are still collected.", status=status, reason=reason)
    if reason in AUTH or (unknown and status == 401):
        return AuthError(
            f"the provider refused the API key ({said}). Check that {key_env} holds a valid key "
            f"for {base_url} with access to this model, then run the same command again.",
            status=status, reason=reason)
    if reason in RATE or (unknown and status == 429):
        retry_after = retry_after_of(headers)
        return RateLimited(f"rate limited by the provider ({said})", status=status,
                           reason=reason or "RATE_LIMIT_EXCEEDED", retry_after=retry_after)
    if reason in TRANSIENT or (unknown and (status >= 500 or status == 408)):
        return TransientError(f"the provider had a temporary problem ({said})", status=status, reason=reason)
    if reason == "TASK_NOT_FOUND":
        return TaskNotFound(f"the provider does not know this task ({said}); it may have expired",
                            status=status, reason=reason)
    if reason == "API_NOT_FOUND" or (unknown and status == 404):
        stop = BatchStopped(
            f"the API at {base_url} has no such endpoint ({said}). Check the base URL "
            f"(--base-url, or base_url: in the manifest) and the model.", status=status, reason=reason)
        stop.kind = StopKind.ENDPOINT
        return stop
    if reason in INVALID_JOB or (unknown and 400 <= status < 500 and status != 403):
        return JobRejected(f"the provider rejected this request ({said}); fix it in the manifest, "
                           f"it will not be retried as is", status=status, reason=reason)
    if status == 403:
        return AuthError(
            f"the provider refused access ({said}). Check that {key_env} holds a valid key with "
            f"access to this model, then run the same command again.", status=status, reason=reason)
    return TransientError(f"unexpected answer from the provider ({said})", status=status, reason=reason)
