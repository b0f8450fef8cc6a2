"""The one error tree of batchgen.

Every error a user can cause or meet is a ``BatchgenError`` with a message written for a
person and an exit code for the CLI. Errors never carry the API key, not even in reprs.

    BatchgenError                     exit 1 unless a subclass says otherwise
    ├── ManifestError                 exit 2: the manifest is wrong (.problems, one per line)
    ├── UsageError                    exit 2: bad arguments, missing key, folder in use
    │   ├── NotABatchFolder           the output folder holds other files and no ledger
    │   ├── FolderMismatch            the folder was made against another target (.recorded)
    │   └── FileClash                 a job would write over another job's file (.clashes)
    ├── ProviderError                 the API answered something we cannot use (.status, .reason)
    │   ├── JobRejected               this request is wrong: fail the job, never retry it
    │   ├── BatchStopped              exit 3: nothing more can be submitted (.kind)
    │   │   ├── AuthError             the key is missing, wrong or not allowed: stop everything
    │   │   ├── BalanceError          out of credit: stop submitting, keep collecting
    │   │   └── ProviderUnreachable   the API host never answered (refused, DNS, TLS): check the URL
    │   ├── RateLimited               429: everyone waits (.retry_after)
    │   ├── TransientError            5xx, dropped connections, timeouts, garbled answers
    │   └── TaskNotFound              404: the task is unknown or expired at the provider
    ├── DownloadError                 the result could not be turned into a good image file
    │   ├── ImageExpired              the URL expired and asking again did not help
    │   └── BadImage                  the bytes are not an image of the declared format
    │       └── ImageTooLarge         over the size limit (never fetched again)
    ├── LedgerError                   the ledger cannot be used
    ├── OutputError                   exit 4: the output folder cannot be written (disk full...)
    └── BudgetReached                 exit 5: the next submit could pass max_cost (.spent)
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AuthError",
    "BadImage",
    "BalanceError",
    "BatchStopped",
    "BatchgenError",
    "BudgetReached",
    "DownloadError",
    "DownloadTimedOut",
    "ImageExpired",
    "ImageTooLarge",
    "JobRejected",
    "LedgerError",
    "FileClash",
    "FolderMismatch",
    "ManifestError",
    "NotABatchFolder",
    "OutputError",
    "Problem",
    "ProviderError",
    "ProviderUnreachable",
    "RateLimited",
    "StopKind",
    "TaskNotFound",
    "TransientError",
    "UsageError",
]


class BatchgenError(Exception):
    """Base of every error batchgen raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as we can.

    ``line`` and ``col`` are 1-based; 0 means unknown. ``file`` may be the manifest or a
    data file it names (prompts, CSV rows).
    """

    file: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
            if self.col:
                where += f":{self.col}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ManifestError(BatchgenError):
    """The manifest cannot be used; ``problems`` lists every problem found, in file order."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(BatchgenError):
    """The command itself is wrong (arguments, environment, a folder in use)."""

    exit_code = 2


class NotABatchFolder(UsageError):
    """The output folder exists, holds files, and has no ledger: it is not a batch's folder."""

    def __init__(self, message: str, folder: object) -> None:
        super().__init__(message)
        self.folder = folder


class FolderMismatch(UsageError):
    """The batch folder was made against another target (provider, host, model, simulated).

    ``recorded`` and ``current`` are the two targets (``batchgen.storage.identity.Target``),
    ``done`` how many images the folder holds; ``RunOptions(adopt=True)`` (``--adopt``)
    records the new target and goes on.
    """

    def __init__(self, message: str, *, folder: object, recorded: object, current: object,
                 done: int) -> None:
        super().__init__(message)
        self.folder = folder
        self.recorded = recorded
        self.current = current
        self.done = done


class FileClash(UsageError):
    """Jobs of the manifest would write over files the ledger records for other jobs.

    ``clashes`` holds the first few (``batchgen.storage.diff.Clash``), ``count`` all of them.
    """

    def __init__(self, message: str, *, folder: object, clashes: list, count: int) -> None:
        super().__init__(message)
        self.folder = folder
        self.clashes = list(clashes)
        self.count = count


class ProviderError(BatchgenError):
    """The provider answered something other than what we asked for.

    ``status`` is the HTTP status (0 when no answer came), ``reason`` the provider's reason
    code (``""`` when there was none). The message says what happened and what to do.
    """

    retryable: bool = False

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class JobRejected(ProviderError):
    """The provider refuses this request as written; sending it again would not help."""


class StopKind(StrEnum):
    """Why the provider stopped a batch; BALANCE alone lets paid tasks still be collected."""

    STOPPED = "stopped"
    AUTH = "auth"
    BALANCE = "balance"
    ENDPOINT = "endpoint"
    UNREACHABLE = "unreachable"


class BatchStopped(ProviderError):
    """The provider will not take more work from this account until the user acts."""

    exit_code = 3
    kind: StopKind = StopKind.STOPPED


class AuthError(BatchStopped):
    """The key is missing, wrong, or not allowed to use this model."""

    kind = StopKind.AUTH


class BalanceError(BatchStopped):
    """The account is out of credit; tasks already paid for can still be collected."""

    kind = StopKind.BALANCE


class ProviderUnreachable(BatchStopped):
    """No request reached the API host (connection refused, DNS or TLS failure) and it never
    answered in this run: most likely a wrong base URL. Nothing was sent, so no job failed."""

    kind = StopKind.UNREACHABLE

    def __init__(self, message: str, *, url: str, origin: str) -> None:
        super().__init__(message)
        self.url = url
        self.origin = origin


class RateLimited(ProviderError):
    """The provider asks us to slow down; ``retry_after`` is in seconds when it said."""

    retryable = True

    def __init__(self, message: str, *, status: int = 429, reason: str = "RATE_LIMIT_EXCEEDED",
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class TransientError(ProviderError):
    """A failure that may pass: server errors, dropped connections, timeouts.

    ``maybe_created`` is true when a submit may have reached the provider before failing,
    so a task may exist there that we hold no id for; ``maybe_count`` is how many tries of
    the submit ended that way (each may have created, and been billed for, a task).
    ``unreached`` is true when no connection to the host could be made at all (refused, DNS,
    TLS, connect timeout): the request certainly never arrived.
    """

    retryable = True

    def __init__(self, message: str, *, status: int = 0, reason: str = "",
                 maybe_created: bool = False, unreached: bool = False) -> None:
        super().__init__(message, status=status, reason=reason)
        self.maybe_created = maybe_created
        self.maybe_count = int(maybe_created)
        self.unreached = unreached


class TaskNotFound(ProviderError):
    """The provider does not know this task id (never existed, or its result expired)."""


class DownloadError(BatchgenError):
    """The finished task's image could not be fetched or accepted."""

    retryable = True


class DownloadTimedOut(DownloadError):
    """The image download's one overall deadline passed (every try included): a host that
    slow is not asked again, so one image never holds a job for a multiple of it."""

    retryable = False


class ImageExpired(DownloadError):
    """The image URL had expired and a fresh task result did not give a working one."""


class BadImage(DownloadError):
    """The bytes are not a decodable image in the declared format (or are too large)."""


class ImageTooLarge(BadImage):
    """The image is over the size limit: fetching it again would only cost the same again."""

    retryable = False


class LedgerError(BatchgenError):
    """The ledger is unreadable or belongs to another batch."""

    exit_code = 2


class BudgetReached(BatchgenError):
    """The batch's budget (``max_cost``) would not cover one more task: nothing more is sent,
    and what was paid for is still collected. Raising the budget goes on."""

    exit_code = 5

    def __init__(self, message: str, *, spent: float, max_cost: float) -> None:
        super().__init__(message)
        self.spent = spent
        self.max_cost = max_cost


class OutputError(BatchgenError):
    """Files cannot be written in the output folder (not writable, disk full)."""

    exit_code = 4

    @classmethod
    def from_os_error(cls, where: str, exc: OSError) -> OutputError:
        """The message for an OSError while writing ``where``, saying what to do about it."""
        if exc.errno == errno.ENOSPC:
            return cls(f"the disk is full while writing {where}. Free some space and run the same "
                       f"command again; finished images and the ledger are intact.")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return cls(f"cannot write {where} ({exc.strerror}). Choose a writable folder with "
                       f"--output or fix its permissions.")
        return cls(f"cannot write {where}: {exc.strerror or exc}")
