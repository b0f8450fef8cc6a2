"""Every row of the provider's error table maps to what a batch must do: reason first, status second."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from batchgen.provider.classify import classify_error, parse_retry_after, retry_after_of
from batchgen.errors import (
    AuthError,
    BalanceError,
    BatchStopped,
    JobRejected,
    RateLimited,
    TaskNotFound,
    TransientError,
)


def classify(status: int, reason: str | None, headers: dict | None = None, message: str = "m"):
    body = json.dumps({"code": status, "reason": reason, "message": message, "metadata": {}}).encode() \
        if reason is not None else b"<html>bad gateway</html>"
    return classify_error(status, body, headers or {}, key_env="JIEKOU_API_KEY",
                          base_url="https://api.jiekou.ai", scrub=lambda t: t.replace("SECRET", "***"))


@pytest.mark.parametrize(("status", "reason", "kind"), [
    *[(400, r, JobRejected) for r in ("INVALID_REQUEST_BODY", "INVALID_IMAGE_SIZE", "IMAGE_EXCEEDS_MAX_RESOLUTION",
                                      "INVALID_IMAGE_FORMAT", "IMAGE_FILE_EXCEEDS_MAX_SIZE", "ILLEGAL_PROMPT",
                                      "ILLEGAL_IMAGE_CONTENT")],
    (400, "BILLING_BALANCE_NOT_ENOUGH", BalanceError), (403, "BILLING_BALANCE_NOT_ENOUGH", BalanceError),
    (400, "NOT_ENOUGH_BALANCE", BalanceError), (403, "NOT_ENOUGH_BALANCE", BalanceError),
    *[(s, r, AuthError) for s in (401, 403) for r in ("MISSING_API_KEY", "FAILED_TO_AUTH", "INVALID_API_KEY",
                                                      "API_NOT_ALLOWED", "BILLING_AUTH_FAILED",
                                                      "NEED_REAL_NAME_VERIFY")],
    (404, "TASK_NOT_FOUND", TaskNotFound), (404, "API_NOT_FOUND", BatchStopped),
    (429, "RATE_LIMIT_EXCEEDED", RateLimited),
    *[(500, r, TransientError) for r in ("CREATE_TASK_FAILED", "GET_RESULT_FAILED", "BILLING_FAILED", "TASK_FAILED")],
    (503, "SERVICE_NOT_AVAILABLE", TransientError), (504, "SERVICE_NOT_AVAILABLE", TransientError),
    # reason decides even when the status disagrees
    (500, "ILLEGAL_PROMPT", JobRejected), (400, "RATE_LIMIT_EXCEEDED", RateLimited),
    (200, "SERVICE_NOT_AVAILABLE", TransientError),
    # no usable body: the status decides
    (401, None, AuthError), (403, None, AuthError), (429, None, RateLimited), (502, None, TransientError),
    (504, None, TransientError), (408, None, TransientError), (400, None, JobRejected), (404, None, BatchStopped),
    (418, "SOMETHING_NEW", JobRejected), (503, "SOMETHING_NEW", TransientError),
])
def test_error_table(status: int, reason: str | None, kind: type) -> None:
    error = classify(status, reason)
    assert type(error) is kind
    assert error.status == status


def test_messages_say_what_to_do_and_hide_secrets() -> None:
    auth = classify(403, "INVALID_API_KEY", message="key SECRET is invalid")
    assert "JIEKOU_API_KEY" in str(auth) and "SECRET" not in str(auth) and "***" in str(auth)
    assert "Top up" in str(classify(403, "NOT_ENOUGH_BALANCE"))
    assert "manifest" in str(classify(400, "ILLEGAL_PROMPT"))


def test_retry_after_seconds_and_dates() -> None:
    assert classify(429, "RATE_LIMIT_EXCEEDED", {"retry-after": "7"}).retry_after == 7
    assert classify(429, "RATE_LIMIT_EXCEEDED").retry_after is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after("") is None
    assert parse_retry_after("999999") == 600  # bounded


def test_retry_after_ms_wins_over_retry_after_and_nonsense_is_ignored() -> None:
    assert retry_after_of({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_of({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert retry_after_of({"retry-after-ms": "nan"}) is None
    assert retry_after_of({"retry-after-ms": "-5"}) == 0.0
    assert retry_after_of({}) is None
    assert classify(429, "RATE_LIMIT_EXCEEDED", {"retry-after-ms": "250"}).retry_after == 0.25
