"""One unit of work and the words every stage uses for what became of it.

A Job is pure data, cheap to make and to drop: expansion yields them one at a time, so a
million-job manifest never holds a million of them. ``JobState`` and ``Failure`` are the typed
outcomes the engine records, the ledger stores and the CLI renders: no code parses a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, NamedTuple

__all__ = ["IDENTIFIER", "MASK64", "Failed", "Failure", "FailureInfo", "Job", "JobState"]

#: A name a manifest or the environment gives: an axis, a template field, a key variable.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Hashes folded to 64 bits (file-name keys, the shard hash).
MASK64 = (1 << 64) - 1


class JobState(StrEnum):
    """Where a job is (the state machine of docs/architecture.md, "Job states"); the value is
    what the ledger writes."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    GENERATED = "generated"
    DONE = "done"
    FAILED = "failed"

    @property
    def outstanding(self) -> bool:
        """The task is out at the provider: follow it, never submit it again."""
        return self in (JobState.SUBMITTED, JobState.GENERATED)


class FailureInfo:
    """What a Failure member carries: may another try help, is the old task worth following,
    and what the user can do."""

    __slots__ = ("retryable", "follow", "advice")

    def __init__(self, retryable: bool, follow: bool, advice: str) -> None:
        self.retryable = retryable
        self.follow = follow
        self.advice = advice


class Failure(Enum):
    """Why a job failed. ``code`` is the ledger's and the summary's word for it."""

    SUBMIT_FAILED = FailureInfo(True, False, "the submit did not go through; `retry` sends it again")
    REJECTED = FailureInfo(False, False, "the provider refuses this request as written; fix the "
                                         "manifest, or `retry --include-rejected`")
    TASK_NOT_FOUND = FailureInfo(True, False, "the provider no longer knows the task; `retry` "
                                              "submits the job again")
    TASK_FAILED = FailureInfo(True, False, "the provider's task failed; `retry` submits it again")
    TIMEOUT = FailureInfo(True, True, "the task did not finish in time; `collect` or `retry` "
                                      "follows it again")
    # After generation the task holds the paid image: follow it again rather than pay twice.
    EXPIRED = FailureInfo(True, True, "the image URL expired before it could be fetched; `retry` "
                                      "fetches it from its task again (and submits anew only if "
                                      "the provider forgot the task)")
    DOWNLOAD_FAILED = FailureInfo(True, True, "the image could not be downloaded; `retry` fetches "
                                              "it from its task again")
    NO_IMAGE = FailureInfo(True, False, "the task succeeded without an image; `retry` submits it again")
    BAD_IMAGE = FailureInfo(True, True, "the bytes were not a good image; `retry` fetches it from "
                                        "its task again (and submits anew if it is broken again)")

    @property
    def code(self) -> str:
        return self.name

    @property
    def retryable(self) -> bool:
        return self.value.retryable

    @property
    def follow(self) -> bool:
        """A later run follows the recorded task again instead of submitting a new one: the
        task may still finish (TIMEOUT) or still hold the paid image (EXPIRED, download and
        image failures)."""
        return self.value.follow

    @property
    def advice(self) -> str:
        return self.value.advice

    @classmethod
    def from_code(cls, code: str) -> Failure:
        """The member for a ledger code; a provider reason of a rejected job maps to REJECTED."""
        member = cls.__members__.get(code)
        return member if member is not None else cls.REJECTED


@dataclass(frozen=True, slots=True)
class Failed:
    """One job's failure as recorded: the typed reason, what happened, and the provider's own
    reason code when it rejected the request (``ILLEGAL_PROMPT``), which is what people group by."""

    failure: Failure
    message: str
    provider_reason: str = ""

    @property
    def label(self) -> str:
        """The word failures are counted under: the provider's reason for a rejection."""
        if self.failure is Failure.REJECTED and self.provider_reason:
            return self.provider_reason
        return self.failure.code

    @property
    def reason(self) -> str:
        """``LABEL: message``, the text the ledger and ``status`` show."""
        return f"{self.label}: {self.message}"


class Job(NamedTuple):
    """What to ask the provider for, and where the answer goes.

    - ``job_id``: stable id, a hash of the canonical request (and replica index), the same on
      every machine for the same manifest.
    - ``index``: position in expansion order (0-based); for display and ``{index}`` only.
    - ``request``: the exact JSON body of the submit call; every field resolved.
    - ``axes``: the matrix values that made this cell (name -> JSON value), for sidecars.
    - ``replica``: 0 for the first copy of a request, 1.. for repeats of the same request.
    - ``name``: file path under the batch's ``images/`` folder, without extension; may hold
      ``/`` for subfolders, never ``..`` nor an absolute path.
    - ``caption``: text for a ``<name>.txt`` caption file next to the image, or None.

    A named tuple rather than a frozen dataclass: as immutable, and made ten times faster
    (a plan makes one per job; a frozen dataclass's ``__init__`` alone cost as much as the
    job's canonical JSON and hash together). ``_replace`` gives a changed copy.
    """

    job_id: str
    index: int
    request: dict[str, Any]
    axes: dict[str, Any]
    replica: int
    name: str
    caption: str | None = None

    @property
    def extension(self) -> str:
        """File extension of the image, from the requested output format."""
        return str(self.request.get("output_format", "webp"))
