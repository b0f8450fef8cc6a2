"""`batchgen plan`: one full pass over a manifest's jobs to validate, count and preview them.

The run engine calls ``plan_manifest`` before it submits anything, so the pass must stay fast
and small: it keeps a 64-bit hash per file name and the first few jobs, never the jobs
themselves. It never contacts the provider and never prints the API key, only its variable.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from batchgen.manifest.axes import lora_label
from batchgen.errors import ManifestError, Problem
from batchgen.job import MASK64, Job
from batchgen.steps import drain
from batchgen.manifest.loader import Manifest
from batchgen.manifest.repeats import RepeatWatch

__all__ = ["DEFAULT_TASK_SECONDS", "Plan", "plan_manifest", "plan_steps"]

#: Seconds one task takes at the provider when nobody says otherwise (an assumption).
DEFAULT_TASK_SECONDS = 3.0
MAX_PROBLEMS = 20
PREVIEW = 5
#: Jobs between two yields of ``plan_steps``: a caller on an event loop stays responsive.
STEP = 4096


@dataclass
class Plan:
    """What a manifest would run: counts, warnings, a preview and a time estimate."""

    manifest: Manifest
    jobs: int
    duplicates: int
    identical_cells: int
    preview: list[Job]
    task_seconds: float
    task_seconds_assumed: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def estimate_seconds(self) -> float:
        """Wall time of every job: the slower of the in-flight limit and the rate limit."""
        return self.seconds_for(self.jobs)

    def seconds_for(self, jobs: int) -> float:
        """Wall time of ``jobs`` of this manifest's jobs (the new work of a resumed batch)."""
        m = self.manifest
        by_slots = jobs * self.task_seconds / m.concurrency
        by_rate = jobs / m.rate_limit * 60 if m.rate_limit else 0.0
        return max(by_slots, by_rate)

    def cost_for(self, jobs: int) -> float | None:
        """What ``jobs`` images cost at the manifest's ``price_per_image`` (None: unknown)."""
        price = self.manifest.price_per_image
        return None if price is None else jobs * price

    @property
    def key_is_set(self) -> bool:
        return bool(os.environ.get(self.manifest.key_variable, "").strip())

    @property
    def key_is_empty(self) -> bool:
        """The variable is set, but to nothing (or blanks): a run would refuse it."""
        value = os.environ.get(self.manifest.key_variable)
        return value is not None and not value.strip()

    def lora_label(self, job: Job) -> str:
        label = job.axes.get("loras")
        if isinstance(label, str):
            return label
        if "loras" not in job.request:
            return "-"
        items = tuple((lora["path"], lora["scale"]) for lora in job.request["loras"])
        base = self.manifest.expansion.base["loras"]
        return base.label if items == base.items else lora_label(items)

    def to_json(self) -> dict[str, Any]:
        """A machine-readable summary (``jobs`` is the job count)."""
        m = self.manifest
        return {
            "manifest": str(m.path),
            "name": m.name,
            "model": m.model,
            "provider": m.provider,
            "base_url": m.endpoint,
            "api_key_env": m.key_variable,
            "api_key_set": self.key_is_set,
            "output": str(m.output),
            "jobs": self.jobs,
            "repeat": m.repeat,
            "axes": {ax.name: ax.size for ax in m.axes},
            "duplicates": self.duplicates,
            "identical_cells": self.identical_cells,
            "warnings": list(self.warnings),
            "filename_example": self.example_file(),
            "preview": [{"index": j.index, "job_id": j.job_id, "name": j.name,
                         "prompt": j.request["prompt"], "seed": j.request["seed"],
                         "size": j.request["size"], "loras": self.lora_label(j)}
                        for j in self.preview],
            "concurrency": m.concurrency,
            "rate_limit": m.rate_limit,
            "task_seconds": self.task_seconds,
            "task_seconds_assumed": self.task_seconds_assumed,
            "estimate_seconds": round(self.estimate_seconds, 1),
            "price_per_image": m.price_per_image,
            "cost": self.cost_for(self.jobs),
        }

    def example_file(self) -> str | None:
        if not self.preview:
            return None
        job = self.preview[0]
        return f"images/{job.name}.{job.extension}"


def plan_manifest(manifest: Manifest, task_seconds: float | None = None,
                  observe: Callable[[Job], None] | None = None) -> Plan:
    """Expand every job once: count, find duplicates and file-name collisions, validate rows.

    ``observe`` sees every valid job of the pass (a comparison with a batch folder rides
    along instead of expanding the manifest a second time). Raises ManifestError with up to
    20 problems (and how many more there were).
    """
    return drain(plan_steps(manifest, task_seconds, observe))


def plan_steps(manifest: Manifest, task_seconds: float | None = None,
               observe: Callable[[Job], None] | None = None) -> Generator[int, None, Plan]:
    """``plan_manifest`` in steps: yields the jobs seen so far every ``STEP`` jobs and returns
    the Plan, so a caller on an event loop can let a Ctrl-C in between steps."""
    problems: list[Problem] = []
    seen_problems: set[Problem] = set()
    extra = 0
    hits = [0] * len(manifest.expansion.excludes)
    check_names = not manifest.expansion.filename.by_job_id
    # 8 bytes per name in a flat array, sorted after the pass: a set of a million ints would
    # cost ~80 MB on top of the expansion's own set of request hashes.
    names = array("Q")
    jobs = duplicates = 0
    preview: list[Job] = []
    repeats = RepeatWatch(manifest)
    # Nobody needs the Jobs past the preview unless they are observed or their names checked:
    # the pass then counts most jobs without making them (see Expansion.iter_jobs).
    light = PREVIEW if observe is None and not check_names else None
    for item in manifest.expand(hits, light):
        if item.__class__ is int:  # jobs counted, not made
            before = jobs
            jobs += item  # type: ignore[operator]
            if jobs // STEP != before // STEP:
                yield jobs
            continue
        if isinstance(item, Problem):
            if item not in seen_problems:
                seen_problems.add(item)
                if len(problems) < MAX_PROBLEMS:
                    problems.append(item)
                else:
                    extra += 1
            continue
        jobs += 1
        if jobs % STEP == 0:
            yield jobs
        if observe is not None:
            observe(item)
        if item.replica:
            duplicates += 1
            repeats.see(item)
        if len(preview) < PREVIEW:
            preview.append(item)
        if check_names:
            # Case-folded: "Cat" and "cat" are the same file on macOS and Windows.
            names.append(hash(item.name.lower()) & MASK64)
    clashes = _repeated(names)
    del names
    if clashes and not problems:
        problems.extend(_collisions(manifest, clashes))
        if len(problems) > MAX_PROBLEMS:
            extra += len(problems) - MAX_PROBLEMS
            del problems[MAX_PROBLEMS:]
    if problems:
        if extra:
            problems.append(Problem(str(manifest.path), 0, 0, "", f"and {extra} more problems"))
        raise ManifestError(problems)
    cells_repeated = jobs - jobs // manifest.repeat
    warnings = [f"axis '{name}' {why}" for name, why in manifest.unused_axes]
    warnings.extend(repeats.warnings())
    for i, count in enumerate(hits):
        if count == 0:
            line = manifest.expansion.src.where(manifest.expansion.excludes[i].path)[0]
            warnings.append(f"exclude entry {i + 1} (line {line}) matches no cell")
    return Plan(manifest=manifest, jobs=jobs, duplicates=duplicates,
                identical_cells=max(duplicates - cells_repeated, 0), preview=preview,
                task_seconds=DEFAULT_TASK_SECONDS if task_seconds is None else task_seconds,
                task_seconds_assumed=task_seconds is None, warnings=warnings)



def _repeated(keys: array) -> set[int]:
    """Values that occur more than once (sorting a copy keeps memory at ~2 ints per key)."""
    ordered = sorted(keys)
    return {a for a, b in zip(ordered, ordered[1:]) if a == b}


def _collisions(manifest: Manifest, clashes: set[int]) -> list[Problem]:
    """Second pass, only when names clash: find which jobs share each name."""
    first: dict[str, int] = {}
    out: list[Problem] = []
    where = manifest.expansion.filename.path or ("filename",)
    for job in manifest.jobs():
        folded = job.name.lower()
        if hash(folded) & MASK64 not in clashes:
            continue
        if folded in first:
            out.append(manifest.expansion.src.problem(
                where, f"jobs {first[folded]} and {job.index} both get the file name "
                       f"'images/{job.name}.{job.extension}'; add {{job_id}} (or the axis that "
                       "tells them apart) to filename", field_name="filename"))
        else:
            first[folded] = job.index
    return out
