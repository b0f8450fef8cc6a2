"""The checks before anything is sent, shared by ``plan`` and every run.

One validating pass over the manifest, every job shown to the folder's diff (done / new /
gone, no job writing over another's file) and, with shards, counted per shard; the folder's
target compared with this run's. ``run`` does it on its locked ledger and stops at the first
refusal; ``plan`` does it on a read-only copy and reports every refusal instead. No event loop
and no HTTP here: ``preflight`` is a generator of steps, driven by ``Batch`` between
checkpoints and by ``plan_batch`` at once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.errors import NotABatchFolder
from batchgen.job import Job
from batchgen.manifest import Manifest
from batchgen.manifest.plan import Plan, plan_steps
from batchgen.manifest.shards import Shard, ShardCounter, ShardTally, parse_shard
from batchgen.provider.targets import resolve_target
from batchgen.storage.batch import BatchPlace, JobCounts, count_jobs, place_of
from batchgen.storage.diff import FolderDiff
from batchgen.steps import drain
from batchgen.storage.folder import check_batch_folder, image_path
from batchgen.storage.identity import Target
from batchgen.storage.ledger import Ledger, has_ledger

__all__ = ["BatchPlan", "Preflight", "key_route", "plan_batch", "preflight", "target_of"]


def target_of(manifest: Manifest, base_url: str | None, simulated: bool) -> Target:
    """The target a run with these options records in the folder (and plan compares); the
    host as named, even one a run would refuse to send the key to (``key_route`` says)."""
    api = resolve_target(manifest.provider, base_url or manifest.base_url, manifest.api_key_env,
                         network=False)
    return Target(api.provider, api.host, manifest.model, simulated)


def key_route(manifest: Manifest, base_url: str | None, simulated: bool) -> tuple[str | None, str | None]:
    """Where a run would send the API key ("host (who chose it)"), or why it would refuse to
    (a manifest's base_url naming a host nobody trusted, plain http): docs/security.md."""
    from batchgen.errors import UsageError

    try:
        api = resolve_target(manifest.provider, base_url, manifest.api_key_env, "--base-url",
                             manifest_url=None if simulated else manifest.base_url,
                             manifest_origin=f"base_url in {manifest.path}", network=not simulated)
    except UsageError as exc:
        return None, str(exc)
    return f"{api.host} ({api.origin})", None


@dataclass
class Preflight:
    """What the checks found: the plan, the folder's diff (None: no ledger yet), this
    shard's job count, and the shards' tally."""

    plan: Plan
    diff: FolderDiff | None
    planned: int
    tally: ShardTally | None = None

    def counts(self, ledger: Ledger) -> JobCounts:
        """The manifest's (or this shard's) jobs by state, after the pass marked them."""
        return count_jobs(ledger, self.planned, passed=True)


def preflight(manifest: Manifest, ledger: Ledger | None, *, shards: int | None = None,
              shard_index: int | None = None, file_of: Callable[[Job], str] = image_path,
              task_seconds: float | None = None) -> Generator[int, None, Preflight]:
    """The one validating pass, in steps: a ManifestError for a bad manifest, a FileClash
    when a job would write over a file the ledger records for another."""
    diff = FolderDiff(ledger, file_of) if ledger is not None else None
    # A first run's ledger is blank: the diff only counts, and the pass makes no Job it need
    # not make (the plan's own speed).
    observe = diff.add if diff is not None and not diff.blank else None
    counter = ShardCounter(shards, observe) if shards is not None else None
    plan = yield from plan_steps(manifest, task_seconds,
                                 observe=counter.observe if counter is not None else observe)
    if diff is not None:
        if observe is None:
            diff.count(plan.jobs)
        diff.finish()
        diff.raise_for_clashes()
    tally = counter.tally if counter is not None else None
    planned = tally.jobs[shard_index] if tally is not None and shard_index is not None else plan.jobs
    return Preflight(plan, diff, planned, tally)


@dataclass
class BatchPlan:
    """``batchgen plan``: what a run of this manifest, with these options, would do."""

    place: BatchPlace
    check: Preflight
    recorded: Target | None      # the folder's target (None: nothing recorded)
    current: Target              # the target a run with these options records
    refused: str | None          # why a run would refuse the folder (someone else's files)
    shard_count: int | None = None
    shard_index: int | None = None
    shard_source: str | None = None
    key_to: str | None = None       # where a run would send the key, and who chose it
    key_refused: str | None = None  # or why a run would refuse to send it

    @property
    def plan(self) -> Plan:
        return self.check.plan

    @property
    def diff(self) -> FolderDiff | None:
        return self.check.diff

    def to_json(self) -> dict[str, Any]:
        plan, diff = self.plan, self.diff
        data = plan.to_json()
        data["key_goes_to"] = self.key_to
        data["key_refused"] = self.key_refused
        data["output"] = self.place.location
        data["ledger"] = diff is not None
        work = diff.new if diff is not None else plan.jobs
        data.update(diff.to_json() if diff is not None else
                    {"done": 0, "new": plan.jobs, "failed": 0, "at_provider": 0, "vanished": 0,
                     "renamed": 0, "clashes": 0})
        data["new_estimate_seconds"] = round(plan.seconds_for(work), 1)
        data["new_cost"] = plan.cost_for(work)
        data["folder_target"] = self.recorded.to_json() if self.recorded is not None else None
        data["target_matches"] = None if self.recorded is None else self.recorded == self.current
        data["folder_refused"] = self.refused
        tally = self.check.tally
        if tally is not None:
            data["shards"] = {"count": tally.count, "jobs": list(tally.jobs),
                              "this": self.shard_index, "source": self.shard_source,
                              "imbalance": round(tally.imbalance, 4)}
        return data


def plan_batch(manifest: Manifest | str | Path, *, output: str | Path | None = None,
               state: str | Path | None = None, shard: str | None = None,
               base_url: str | None = None, simulated: bool = False,
               task_seconds: float | None = None) -> BatchPlan:
    """Validate a manifest and compare it with its batch (the folder or store ``output``
    names, or the manifest's own): the checks a run makes before sending anything, reported
    rather than raised (except a bad manifest and a file clash, which a run refuses too)."""
    place = place_of(manifest, output=output, state=state)
    m = place.manifest
    assert m is not None
    count, index, source = _shards(shard)
    current = target_of(m, base_url, simulated)
    key = key_route(m, base_url, simulated)
    if place.in_store:
        from batchgen.storage.mirror import LedgerMirror

        with tempfile.TemporaryDirectory(prefix="batchgen-plan-") as copies:
            LedgerMirror(place.url).fetch(Path(copies))  # the store's ledger copies
            return _planned(place, Path(copies), current, None, count, index, source, task_seconds, key)
    refused = None
    try:
        check_batch_folder(place.folder)
    except NotABatchFolder as exc:
        refused = str(exc)
    return _planned(place, place.folder, current, refused, count, index, source, task_seconds, key)


def _planned(place: BatchPlace, folder: Path, current: Target, refused: str | None,
             count: int | None, index: int | None, source: str | None,
             task_seconds: float | None, key: tuple[str | None, str | None] = (None, None)) -> BatchPlan:
    ledger = Ledger.read(folder) if has_ledger(folder) else None
    check = drain(preflight(place.manifest, ledger, shards=count, shard_index=index,
                             task_seconds=task_seconds))
    return BatchPlan(place, check, ledger.target if ledger is not None else None, current,
                     refused, count, index, source, *key)


def _shards(text: str | None) -> tuple[int | None, int | None, str | None]:
    """``plan --shard``: (count, this process's index, where it came from). ``auto/N`` outside
    a job array still shows the N shards (which one is this process's is unknown)."""
    if not text:
        return None, None, None
    from batchgen.errors import UsageError

    try:
        shard: Shard = parse_shard(text)
    except UsageError:
        head, slash, tail = text.strip().partition("/")
        if head.strip().lower() != "auto" or not slash or not tail.strip().isdigit() or int(tail) < 1:
            raise
        return int(tail), None, None
    return shard.count, shard.index, shard.source.value

