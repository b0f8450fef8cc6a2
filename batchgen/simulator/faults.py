"""Seeded fault dice: which injected failure, if any, hits this request or this task.

Every roll draws the same number of values whatever the rates are, so one seed replays the
same faults for the same sequence of requests, and turning one fault on does not reshuffle
where the others land. Never sleeps, never does I/O.
"""

from __future__ import annotations

import random
from batchgen.simulator.config import SimConfig

__all__ = ["DOWNLOAD_FAULTS", "FaultDice", "Roll", "POLL_FAULTS", "SUBMIT_FAULTS", "TASK_FAULTS"]

# What can hit each kind of event, in precedence order (the first that fires wins where
# two cannot both happen, e.g. a dropped connection hides a 500).
SUBMIT_FAULTS = ("fault_drop", "fault_503", "fault_500", "fault_429", "fault_not_json", "fault_no_task_id")
TASK_FAULTS = ("fault_stuck", "fault_task_failed")
POLL_FAULTS = ("fault_drop", "fault_503", "fault_500", "fault_not_json", "fault_unknown_status",
               "fault_expire", "fault_bad_base64", "fault_bad_image")
DOWNLOAD_FAULTS = ("fault_redirect", "fault_huge_image", "fault_bad_image", "fault_truncate")


class Roll:
    """The outcome of one roll: which faults fired, and a fair coin for the 50/50 variants."""

    __slots__ = ("fired", "coin")

    def __init__(self, fired: tuple[str, ...], coin: bool) -> None:
        self.fired = fired
        self.coin = coin

    def __contains__(self, name: str) -> bool:
        return name in self.fired

    def first(self) -> str | None:
        return self.fired[0] if self.fired else None


class FaultDice:
    """One ``random.Random(config.fault_seed)`` for every fault decision; not thread-safe
    (the simulator rolls under its state lock)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.fault_seed)

    def roll(self, names: tuple[str, ...]) -> Roll:
        rnd = self.rng.random
        cfg = self.config
        fired = tuple(name for name in names if rnd() < getattr(cfg, name))
        return Roll(fired, rnd() < 0.5)
