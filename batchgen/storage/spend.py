"""What a batch has spent, read from its ledgers: every task the provider accepted (a task id
recorded, a failed job's too) at ``price_per_image``.

The ledgers are the only record of spend, so it survives a kill -9 and every shard reads the
same figure. Never an estimate from the plan, never a figure kept elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.steps import drain
from batchgen.storage.identity import RunRecord
from batchgen.storage.ledger import LEDGERS_DIR, Ledger, ShardPart, fetched_copies, shard_stem
from batchgen.storage.replay import LedgerStats, Replay
from batchgen.storage.rows import Records

__all__ = ["Spend", "cost_of", "sibling_tasks", "spent_against_budget"]

#: a budget a hair under a whole number of images still buys that image (float division)
_EPSILON = 1e-9


def cost_of(tasks: int, price: float | None) -> float | None:
    """What ``tasks`` accepted tasks cost (None: no price known)."""
    return None if price is None else round(tasks * price, 10)


def spent_against_budget(tasks: int, manifest: Any, run: RunRecord | None
                         ) -> tuple[float | None, float | None]:
    """(spent, max_cost) for ``status``: the price and budget of the manifest given, else of
    the latest run recorded in the ledger (a folder alone knows no manifest)."""
    if manifest is not None:
        price, budget = manifest.price_per_image, manifest.max_cost
    elif run is not None:
        price, budget = run.price, run.max_cost
    else:
        price = budget = None
    return cost_of(tasks, price), budget


@dataclass(frozen=True, slots=True)
class Spend:
    """A batch's spend against its budget, for a start line, ``status`` and ``status --json``."""

    tasks: int                 # tasks the provider accepted, in every ledger
    price: float | None        # price_per_image
    max_cost: float | None     # the budget (None: none)

    @property
    def spent(self) -> float | None:
        return cost_of(self.tasks, self.price)

    @property
    def affordable(self) -> int | None:
        """How many tasks the budget pays for in all (None: no budget, or free images)."""
        if self.max_cost is None or not self.price:
            return None
        return int(self.max_cost / self.price + _EPSILON)

    @property
    def left(self) -> int | None:
        """Tasks the budget still pays for (None: unbounded)."""
        affordable = self.affordable
        return None if affordable is None else max(0, affordable - self.tasks)


def sibling_tasks(folder: Path, shard: ShardPart) -> int:
    """Tasks created in the ledgers of the *other* shards of ``shard``'s count: what this
    shard's count has spent outside this shard. Each is read from the folder's file, or from
    the object store's copy where the folder has none (as a ledger's replay counts them)."""
    folder = Path(folder)
    copies = fetched_copies(folder)
    total = 0
    for index in range(shard.count):
        if index == shard.index:
            continue
        relative = f"{LEDGERS_DIR}/{shard_stem(_Part(index, shard.count))}.jsonl"
        path = folder / relative
        if not path.is_file():
            path = copies.get(relative)  # type: ignore[assignment]
            if path is None:
                continue
        total += _tasks_in(folder, path)
    return total


def _tasks_in(folder: Path, path: Path) -> int:
    """Tasks created in one ledger file (its header's counts plus its submits), replayed by the
    ledger's own code so the rule is written once."""
    stats = LedgerStats()
    drain(Replay(Ledger(folder, None)).replay_file(path, Records(), stats, None, own=False))
    return stats.tasks_created


@dataclass(frozen=True, slots=True)
class _Part:
    index: int
    count: int

    def holds(self, job_id: str) -> bool:  # pragma: no cover - only its name is used
        return False
