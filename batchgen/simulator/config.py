"""What the simulated provider is like: latency, capacity, limits, balance and fault rates.

A plain dataclass, checked once in ``__post_init__``; the simulator reads it on every request,
so changing a field on a live simulator (``sim.config.fault_500 = 0.5``) takes effect at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

__all__ = ["FAULT_HELP", "FAULT_NAMES", "RETRY_AFTER_STYLES", "RPM_COUNTS", "RPM_WINDOWS", "SimConfig"]

RetryAfterStyle = Literal["seconds", "date", "ms", "none", "half", "mixed"]
RETRY_AFTER_STYLES = ("seconds", "date", "ms", "none", "half", "mixed")
RPM_COUNTS = ("accepted", "all")
RPM_WINDOWS = ("sliding", "fixed")
RpmCounts = Literal["accepted", "all"]
RpmWindow = Literal["sliding", "fixed"]
SeedStyle = Literal["string", "int", "mixed"]
Base64Prefix = Literal["mixed", "always", "never"]
BalanceStyle = Literal["balance", "billing"]

#: Every fault rate field, with what it does (the CLI's --fault-* help).
FAULT_HELP: dict[str, str] = {
    "fault_429": "a submit answers 429 RATE_LIMIT_EXCEEDED",
    "fault_429_poll": "a task-result poll answers 429 RATE_LIMIT_EXCEEDED",
    "fault_500": "500 CREATE_TASK_FAILED on submit, GET_RESULT_FAILED on poll",
    "fault_503": "503 SERVICE_NOT_AVAILABLE on submit or poll",
    "fault_drop": "the connection drops (on submit, half of them after the task was created)",
    "fault_task_failed": "the task ends TASK_STATUS_FAILED",
    "fault_truncate": "an image download is cut short",
    "fault_expire": "an image URL is already expired when issued",
    "fault_unknown_status": "a poll of an unfinished task says TASK_STATUS_UNKNOWN",
    "fault_stuck": "the task stays QUEUED forever",
    "fault_not_json": "a submit or poll answers 200 with an HTML page",
    "fault_no_task_id": "a submit answers 200 {} (the task is created and charged)",
    "fault_bad_base64": "base64 mode: the image field is not base64",
    "fault_bad_image": "the image bytes are not an image, or in another format than declared",
    "fault_redirect": "the image host answers 302 to another host",
    "fault_huge_image": "the image body is huge (huge_image_bytes, streamed, no Content-Length)",
}
FAULT_NAMES: tuple[str, ...] = tuple(FAULT_HELP)


@dataclass
class SimConfig:
    """The provider being simulated. Defaults: a healthy, unlimited account, 1 s tasks.

    Times are seconds of the simulator's clock. Fault rates are probabilities in [0, 1]; every
    draw (faults, durations, drawn seeds, "mixed" styles) is keyed by ``fault_seed`` and the
    request's stable identity (its body, its task, its attempt number), so a failing test
    replays exactly, in whatever order its requests arrive. Task ids are random per instance.
    """

    # --- account ---
    api_key: str | None = None          # None: any non-empty bearer key is accepted
    balance: int | None = None          # tasks the account can still pay for; None: unlimited
    balance_style: BalanceStyle = "balance"  # "balance": 403 NOT_ENOUGH_BALANCE; "billing": 400 BILLING_BALANCE_NOT_ENOUGH
    # --- work ---
    task_seconds: float = 1.0           # mean processing time; 0: done at the first poll
    api_seconds: float = 0.0            # each API answer leaves this long after the request came
                                        # (a provider's round trip; the request acts at once)
    task_jitter: float = 0.3            # standard deviation (normal, truncated at 0.05 s)
    workers: int = 10_000               # parallel processing slots; beyond them tasks queue FIFO
    # --- limits ---
    max_in_flight: int | None = None    # queued + processing tasks per account; beyond: 429
    rpm: int | None = None              # submits per 60 s window; beyond: 429
    # What the rpm window counts: only the submits it accepted, or every submit that reached
    # it (refused ones too, so a refused retry pushes the window's opening further out).
    rpm_counts: RpmCounts = "accepted"
    # A sliding window (the last 60 s) or a fixed one (each clock minute, reset at its start).
    rpm_window: RpmWindow = "sliding"
    # How a 429 says when to come back: Retry-After in whole seconds, as an HTTP-date,
    # retry-after-ms (milliseconds, as some APIs send), nothing, seconds on half of them and
    # nothing on the other half ("half"), or any of seconds/date/none ("mixed").
    retry_after: RetryAfterStyle = "mixed"
    # --- results ---
    url_ttl: float = 3600.0             # image URLs expire this long after they were issued
    download_seconds: float = 0.0       # the image host takes this long to start each answer
    result_ttl: float | None = None     # task-result answers 404 this long after completion
    hints: bool = True                  # fill eta / progress_percent (False: always 0)
    nsfw_detection: bool = False        # fill images[].nsfw_detection_result (valid, confidence)
    seed_as_int: bool = False           # shorthand for seed_style="int"
    seed_style: SeedStyle = "string"    # extra.seed as the docs (string), the SDK (int), or mixed
    base64_prefix: Base64Prefix = "mixed"  # data:image/...;base64, prefix in base64 mode
    banned_words: list[str] = field(default_factory=lambda: ["forbidden"])
    image_cache_size: int = 256         # rendered images kept (LRU)
    huge_image_bytes: int = 1 << 30     # body length of a fault_huge_image answer
    # --- faults ---
    fault_seed: int = 0
    fault_429: float = 0.0              # submit answers 429 RATE_LIMIT_EXCEEDED
    fault_429_poll: float = 0.0         # task-result poll answers 429 RATE_LIMIT_EXCEEDED
    fault_500: float = 0.0              # 500 CREATE_TASK_FAILED / GET_RESULT_FAILED
    fault_503: float = 0.0              # 503 SERVICE_NOT_AVAILABLE
    fault_drop: float = 0.0             # connection dropped; on submit half after the task exists
    fault_task_failed: float = 0.0      # the task ends TASK_STATUS_FAILED
    fault_truncate: float = 0.0         # image body cut short
    fault_expire: float = 0.0           # image URL already expired when issued
    fault_unknown_status: float = 0.0   # a poll of an unfinished task says TASK_STATUS_UNKNOWN
    fault_stuck: float = 0.0            # the task stays QUEUED forever
    fault_not_json: float = 0.0         # 200 with an HTML body
    fault_no_task_id: float = 0.0       # submit answers 200 {} (the task IS created)
    fault_bad_base64: float = 0.0       # base64 mode: the field is not base64
    fault_bad_image: float = 0.0        # image bytes that are not an image of the declared format
    fault_redirect: float = 0.0         # image host answers 302 to another host
    fault_huge_image: float = 0.0       # image body of huge_image_bytes, streamed

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in fields(self):
            if f.name.startswith("fault_") and f.name != "fault_seed":
                rate = getattr(self, f.name)
                if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                    problems.append(f"{f.name} must be a rate in [0, 1], got {rate!r}")
        if self.api_key is not None and not self.api_key:
            problems.append("api_key must be None (accept any key) or a non-empty string")
        if self.task_seconds < 0 or self.task_jitter < 0:
            problems.append("task_seconds and task_jitter must be >= 0")
        if self.workers < 1:
            problems.append("workers must be >= 1")
        for name in ("max_in_flight", "rpm", "balance"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be None or >= 0")
        if self.url_ttl <= 0:
            problems.append("url_ttl must be > 0")
        if self.download_seconds < 0:
            problems.append("download_seconds must be >= 0")
        if self.api_seconds < 0:
            problems.append("api_seconds must be >= 0")
        if self.result_ttl is not None and self.result_ttl < 0:
            problems.append("result_ttl must be None or >= 0")
        if self.retry_after not in RETRY_AFTER_STYLES:
            problems.append("retry_after must be one of " + ", ".join(RETRY_AFTER_STYLES))
        if self.rpm_counts not in ("accepted", "all"):
            problems.append("rpm_counts must be accepted or all")
        if self.rpm_window not in ("sliding", "fixed"):
            problems.append("rpm_window must be sliding or fixed")
        if self.seed_style not in ("string", "int", "mixed"):
            problems.append("seed_style must be one of string, int, mixed")
        if self.base64_prefix not in ("mixed", "always", "never"):
            problems.append("base64_prefix must be one of mixed, always, never")
        if self.balance_style not in ("balance", "billing"):
            problems.append("balance_style must be balance or billing")
        if self.image_cache_size < 0 or self.huge_image_bytes < 1:
            problems.append("image_cache_size must be >= 0 and huge_image_bytes >= 1")
        if problems:
            raise ValueError("invalid SimConfig: " + "; ".join(problems))
        if self.seed_as_int:
            self.seed_style = "int"
        self.banned_words = [w.lower() for w in self.banned_words if w]
