"""What a batch folder is: the target that made its images, and what each run set out to do.

A folder made against the simulator must never pass for one made against the real API, and a
resumed run must know how many jobs its manifest plans, even when ``status`` is given only the
folder. So every run records, in the ledger, its ``Target`` (provider, API host, model,
simulated or not) and a ``RunRecord`` (mode, planned jobs, this run's goal, the manifest and
the options that matter for running it again). Plain data: no I/O here, and no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RunRecord", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a batch's images come from; two runs may share a folder only with equal targets."""

    provider: str
    host: str
    model: str
    simulated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "host": self.host, "model": self.model,
                "simulated": self.simulated}

    @classmethod
    def from_json(cls, data: Any) -> Target | None:
        """The target as recorded, or None when the record is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["provider"]), str(data["host"]), str(data["model"]),
                       bool(data.get("simulated", False)))
        except KeyError:
            return None

    def describe(self) -> str:
        """The target as people read it (errors, plan, status): ``model on provider (host)``."""
        where = "the simulator" if self.simulated else self.provider
        return f"{self.model} on {where} ({self.host})"

    def differences(self, other: Target) -> list[str]:
        """The fields (by name) in which ``other`` differs from this target."""
        return [name for name in ("provider", "host", "model", "simulated")
                if getattr(self, name) != getattr(other, name)]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a batch as the ledger keeps it.

    ``planned`` is the manifest's job count at that run; ``goal`` the jobs the run meant to
    have done by its end (fewer with ``max_jobs``). ``manifest`` and ``output`` are absolute
    paths and ``base_url`` the command line's override, if any, so a hint printed from the
    folder alone names a command that works from anywhere.
    """

    at: float
    mode: str
    target: Target
    planned: int
    goal: int
    manifest: str | None = None
    output: str | None = None
    base_url: str | None = None
    max_jobs: int | None = None
    adopted: Target | None = None  # the target the folder had before this run adopted it
    shard: str | None = None       # "I/N" when the run took one shard of the jobs
    price: float | None = None     # price_per_image at that run
    max_cost: float | None = None  # the budget that run kept to

    def to_json(self) -> dict[str, Any]:
        event: dict[str, Any] = {"batchgen_run": 1, "at": round(self.at, 3), "mode": self.mode,
                                 "target": self.target.to_json(), "planned": self.planned,
                                 "goal": self.goal, "manifest": self.manifest,
                                 "output": self.output}
        if self.base_url:
            event["base_url"] = self.base_url
        if self.max_jobs is not None:
            event["max_jobs"] = self.max_jobs
        if self.adopted is not None:
            event["adopted_from"] = self.adopted.to_json()
        if self.shard is not None:
            event["shard"] = self.shard
        if self.price is not None:
            event["price"] = self.price
        if self.max_cost is not None:
            event["max_cost"] = self.max_cost
        return event

    @classmethod
    def from_json(cls, event: dict[str, Any]) -> RunRecord | None:
        """The run as recorded, or None when the line is not a readable run record."""
        target = Target.from_json(event.get("target"))
        if target is None:
            return None
        try:
            planned = int(event.get("planned", 0))
            goal = int(event.get("goal", planned))
            max_jobs = event.get("max_jobs")
            return cls(at=float(event.get("at", 0.0)), mode=str(event.get("mode", "run")),
                       target=target, planned=planned, goal=goal,
                       manifest=_text(event.get("manifest")), output=_text(event.get("output")),
                       base_url=_text(event.get("base_url")),
                       max_jobs=int(max_jobs) if max_jobs is not None else None,
                       adopted=Target.from_json(event.get("adopted_from")),
                       shard=_text(event.get("shard")), price=_number(event.get("price")),
                       max_cost=_number(event.get("max_cost")))
        except (TypeError, ValueError):
            return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
