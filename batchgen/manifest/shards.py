"""Shards: which slice of a manifest's job stream one of N processes takes on.

A job belongs to shard ``jump(u64(sha256(job_id)[:8]), N)``: the first 8 bytes of the SHA-256
of its id (UTF-8), read as a big-endian unsigned integer, put into one of N buckets by jump
consistent hashing (Lamping and Veach, 2014). It depends on the job id alone, never on the
job's position, so an edited manifest keeps every surviving job in its shard; and going from N
to N+1 shards moves only a 1/(N+1) share of the jobs. The index comes from ``--shard I/N`` or
from a job array's environment (Slurm, Kubernetes Indexed Jobs, AWS Batch). Pure and streaming:
no I/O beyond reading the environment it is handed, no heavy imports.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from batchgen.errors import UsageError
from batchgen.job import MASK64, Job

__all__ = [
    "Shard",
    "ShardCounter",
    "ShardSource",
    "ShardTally",
    "parse_shard",
    "jump_hash",
    "shard_from_environment",
    "shard_of",
    "tally_shards",
]

_FORMS = "write I/N (0-based: 0/8 is the first of 8 shards), auto, or auto/N"


class ShardSource(StrEnum):
    """Where a shard's index came from; the value is what messages and summaries show."""

    GIVEN = "--shard"
    SLURM = "Slurm"
    KUBERNETES = "Kubernetes"
    AWS_BATCH = "AWS Batch"


def shard_of(job_id: str, count: int) -> int:
    """The shard (0..count-1) that ``job_id`` belongs to among ``count`` shards."""
    return jump_hash(int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big"), count)


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit ``key`` into ``buckets`` (the paper's reference code)."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & MASK64
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based), and where that came from."""

    index: int
    count: int
    source: ShardSource = ShardSource.GIVEN

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"--shard {self.index}/{self.count}: there must be at least 1 shard")
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"--shard {self.index}/{self.count}: the index counts from 0, so the shards of "
                f"{self.count} are 0/{self.count} to {self.count - 1}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, job_id: str) -> bool:
        """True when the job with this id is this shard's to run."""
        return self.count == 1 or shard_of(job_id, self.count) == self.index

    def select(self, jobs: Iterable[Job]) -> Iterator[Job]:
        """This shard's jobs of ``jobs``, lazily and in their order."""
        return (job for job in jobs if self.holds(job.job_id))


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """The shard a ``--shard`` value names: ``I/N``, ``auto`` or ``auto/N``.

    ``auto`` reads the job array's index (and count, where the scheduler sets one) from
    ``environ`` (default ``os.environ``); ``auto/N`` gives the count, which Kubernetes never
    sets, and must agree with any count the environment holds. Raises UsageError (exit 2).
    """
    value = text.strip()
    head, slash, tail = value.partition("/")
    if head.strip().lower() == "auto":
        count = _whole(tail, f"--shard {value}", _FORMS) if slash else None
        if count is not None and count < 1:
            raise UsageError(f"--shard {value}: there must be at least 1 shard")
        return shard_from_environment(os.environ if environ is None else environ, count)
    if not slash:
        raise UsageError(f"--shard {value!r}: {_FORMS}")
    return Shard(_whole(head, f"--shard {value}", _FORMS), _whole(tail, f"--shard {value}", _FORMS))


def shard_from_environment(environ: Mapping[str, str], count: int | None = None) -> Shard:
    """The shard a job array's environment names; ``count`` is what ``auto/N`` gave, if anything."""
    found = [s for s in (_slurm(environ, count), _kubernetes(environ, count), _aws_batch(environ, count))
             if s is not None]
    if not found:
        raise UsageError(_nothing_set(environ))
    first = found[0]
    for other in found[1:]:
        if (other.index, other.count) != (first.index, first.count):
            raise UsageError(
                f"--shard auto: the environment names two different shards: {first.source} says "
                f"{first}, {other.source} says {other}. Give the shard yourself with --shard I/N.")
    return first


def _whole(text: str, where: str, hint: str) -> int:
    text = text.strip()
    if not _is_whole(text):
        raise UsageError(f"{where}: {text!r} is not a whole number; {hint}")
    return int(text)


def _is_whole(text: str) -> bool:
    return text.isascii() and text.isdecimal()


def _variable(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    if not _is_whole(text):
        raise UsageError(f"--shard auto: {name}={text!r} is not a whole number (it is set by the "
                         f"job scheduler; give the shard yourself with --shard I/N)")
    return int(text)


def _agree(source: ShardSource, index: int, count: int | None, given: int | None,
           count_name: str) -> Shard:
    if count is not None and given is not None and count != given:
        raise UsageError(
            f"--shard auto/{given}: {source} runs {count} copies ({count_name}={count}), not "
            f"{given}. Write --shard auto, or make the array size and N the same.")
    total = given if count is None else count
    if total is None:
        raise UsageError(
            f"--shard auto: {source} gives this copy's index ({index}) but not how many copies "
            f"there are; write --shard auto/N with N the number of copies.")
    if index >= total:
        raise UsageError(
            f"--shard auto: {source} says this is copy {index} (counting from 0) of only {total}")
    return Shard(index, total, source)


def _slurm(environ: Mapping[str, str], given: int | None) -> Shard | None:
    task = _variable(environ, "SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    low = _variable(environ, "SLURM_ARRAY_TASK_MIN")
    high = _variable(environ, "SLURM_ARRAY_TASK_MAX")
    step = _variable(environ, "SLURM_ARRAY_TASK_STEP") or 1
    count = _variable(environ, "SLURM_ARRAY_TASK_COUNT")
    first = 0 if low is None else low
    regular = task >= first and (task - first) % step == 0
    if high is not None:
        span, rest = divmod(high - first, step)
        regular = regular and rest == 0 and span >= 0 and count in (None, span + 1)
        count = span + 1 if count is None else count
    if not regular:
        array = f"--array=0-{count - 1}" if count else "--array=0-N"
        raise UsageError(
            f"--shard auto: this Slurm array is not one evenly spaced range (SLURM_ARRAY_TASK_ID="
            f"{task}, MIN={low}, MAX={high}, STEP={step}, COUNT={count}), so its task ids do "
            f"not number the shards. Submit with {array} (a %limit is fine), or give "
            f"--shard I/N yourself.")
    return _agree(ShardSource.SLURM, (task - first) // step, count, given, "SLURM_ARRAY_TASK_COUNT")


def _kubernetes(environ: Mapping[str, str], given: int | None) -> Shard | None:
    index = _variable(environ, "JOB_COMPLETION_INDEX")
    if index is None:
        return None
    if given is None:
        raise UsageError(
            f"--shard auto: Kubernetes gives this pod's index (JOB_COMPLETION_INDEX={index}) "
            f"but not the number of pods; write --shard auto/N with N the Job's "
            f"spec.completions.")
    return _agree(ShardSource.KUBERNETES, index, None, given, "")


def _aws_batch(environ: Mapping[str, str], given: int | None) -> Shard | None:
    index = _variable(environ, "AWS_BATCH_JOB_ARRAY_INDEX")
    if index is None:
        return None
    size = _variable(environ, "AWS_BATCH_JOB_ARRAY_SIZE")
    return _agree(ShardSource.AWS_BATCH, index, size, given, "AWS_BATCH_JOB_ARRAY_SIZE")


def _nothing_set(environ: Mapping[str, str]) -> str:
    looked = ("SLURM_ARRAY_TASK_ID (Slurm), JOB_COMPLETION_INDEX (Kubernetes) and "
              "AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch)")
    if environ.get("SLURM_JOB_ID"):
        hint = " This Slurm job is not an array: for 8 shards, submit it with sbatch --array=0-7."
    elif environ.get("KUBERNETES_SERVICE_HOST"):
        hint = " This pod's Job is not indexed: set completionMode: Indexed in its spec."
    elif environ.get("AWS_BATCH_JOB_ID"):
        hint = " This AWS Batch job is not an array job: give it arrayProperties: {size: N}."
    else:
        hint = " Outside a job array, give the shard with --shard I/N."
    return f"--shard auto: none of {looked} is set.{hint}"


@dataclass(frozen=True, slots=True)
class ShardTally:
    """How many jobs each of ``count`` shards holds (``jobs[i]`` for shard i)."""

    count: int
    jobs: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.jobs)

    @property
    def imbalance(self) -> float:
        """The largest shard over the mean (1.0: all equal): how much longer its run may take."""
        total = self.total
        return max(self.jobs) * self.count / total if total else 1.0


class ShardCounter:
    """Each of ``count`` shards' jobs, counted as a pass over the jobs sees them: ``observe``
    rides the plan's own pass (nothing is expanded twice), handing every job on to ``then``."""

    def __init__(self, count: int, then: Callable[[Job], None] | None = None) -> None:
        if count < 1:
            raise UsageError(f"--shard auto/{count}: there must be at least 1 shard")
        self.count = count
        self._then = then
        self._jobs = [0] * count

    def observe(self, job: Job | str) -> None:
        if self._then is not None:
            self._then(job)  # type: ignore[arg-type]
        self._jobs[shard_of(job if isinstance(job, str) else job.job_id, self.count)] += 1

    @property
    def tally(self) -> ShardTally:
        return ShardTally(self.count, tuple(self._jobs))


def tally_shards(jobs: Iterable[Job] | Iterable[str], count: int) -> ShardTally:
    """Count each shard's jobs in one streaming pass over jobs (or job ids); for ``plan``."""
    counter = ShardCounter(count)
    for job in jobs:
        counter.observe(job)
    return counter.tally
