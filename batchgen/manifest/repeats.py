"""Identical requests a manifest asks for, named for ``plan``: a fixed seed repeated
(``repeat: 3`` with ``seed: 5`` makes the same image three times, paid three times), and a
value written twice on an axis (``style: [oil, ink, oil]``).

Watches the plan's one pass job by job, keeping a single example of each kind, never the jobs.
"""

from __future__ import annotations

from typing import Any

from batchgen.job import Job
from batchgen.manifest.axes import ListAxis
from batchgen.manifest.loader import Manifest

__all__ = ["RepeatWatch"]


class RepeatWatch:
    """Sees every job of a pass; ``warnings()`` names what repeats.

    A cell's ``repeat`` copies take consecutive replica numbers of its request, so a replica
    of ``repeat`` or more is a second cell asking for the same request."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.seeded_copies = 0            # repeat copies of a request with a fixed seed
        self.seed_example: Job | None = None
        self.same_cells = 0               # jobs whose cell asks what an earlier cell asked
        self.cell_example: Job | None = None

    def see(self, job: Job) -> None:
        if not job.replica:
            return
        repeat = self.manifest.repeat
        if job.replica % repeat and job.request.get("seed", -1) != -1:
            self.seeded_copies += 1
            if self.seed_example is None:
                self.seed_example = job
        if job.replica >= repeat:
            self.same_cells += 1
            if self.cell_example is None:
                self.cell_example = job

    def warnings(self) -> list[str]:
        out: list[str] = []
        m = self.manifest
        if self.seed_example is not None:
            seed = self.seed_example.request["seed"]
            out.append(f"repeat: {m.repeat} with a fixed seed (seed {seed} in job "
                       f"{self.seed_example.index}, {_cell(self.seed_example)}) sends identical "
                       f"requests: {self.seeded_copies:,} copies make the same image again, each "
                       f"paid; seed: -1 lets the provider pick a new seed for each")
        named = False
        for axis in m.axes:
            twice = _written_twice(axis)
            if twice is not None:
                named = True
                out.append(f"axis '{axis.name}' lists {twice} more than once: its cells send "
                           f"identical requests (each paid, each the same image)")
        if self.cell_example is not None and not named:
            out.append(f"{self.same_cells:,} job(s) ask exactly what an earlier cell asks (e.g. "
                       f"job {self.cell_example.index}, {_cell(self.cell_example)}): identical "
                       f"requests, each paid")
        return out


def _written_twice(axis: Any) -> str | None:
    """The first value a manifest-written axis lists twice, shown as written (None: none)."""
    if not isinstance(axis, ListAxis):
        return None
    seen: set[str] = set()
    for _, record in axis.entries:
        values = {k: v for k, v in record.items() if not k.endswith("_source")}
        key = repr(sorted(values.items()))
        if key in seen:
            shown = values.get(axis.name, values)
            return f"'{shown}'" if isinstance(shown, str) else repr(shown)
        seen.add(key)
    return None


def _cell(job: Job) -> str:
    return ", ".join(f"{k}={v}" for k, v in job.axes.items() if not k.endswith("_source")) or "no axes"
