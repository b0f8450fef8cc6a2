"""The batch's hard budget (``max_cost``): the gate every submit passes before it is sent.

Spend is read from the ledger (tasks with a task id, a failed job's too), never kept apart, so
it survives a kill -9 and is the same figure every command shows. Each submit on its way holds
one task's worth of the budget until the ledger records its task (or that none was made), so
submits in flight at once can never pass the budget together.

Shards: shards of one count run at the same time, each with its own ledger, and do not see
each other's submits as they happen. So each shard may spend its share of what the budget
left when the shards began: the budget minus what the folder's other ledgers (an unsharded
run, shards of another count) spent, split as evenly as whole tasks allow. The shares add up to
the budget, so no mix of shards and reruns can pass it; a shard that used its share stops
(exit 5) even if another left some of its share unspent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from batchgen.errors import BudgetReached
from batchgen.storage.ledger import Ledger, ShardPart
from batchgen.storage.spend import Spend, cost_of, sibling_tasks

__all__ = ["Budget", "Hold", "budget_for"]


class Hold:
    """One task's worth of the budget, held by a submit on its way; released once the ledger
    says whether a task was made (releasing twice is harmless)."""

    __slots__ = ("_budget",)

    def __init__(self, budget: Budget) -> None:
        self._budget: Budget | None = budget

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._released()


class Budget:
    """At most ``allowance`` tasks counted by ``counted`` (read from the ledger), plus the
    submits on their way; ``spend`` is the whole batch's, for the messages."""

    def __init__(self, allowance: int, counted: Callable[[], int], spend: Callable[[], Spend],
                 share: str | None = None) -> None:
        self.allowance = allowance
        self.counted = counted
        self.spend = spend
        self.share = share  # "shard I/N": the allowance is a shard's share
        self.held = 0
        self._changed: anyio.Event | None = None

    def room(self) -> bool:
        """One more task fits, counting the submits on their way."""
        return self.counted() + self.held < self.allowance

    def left(self) -> int:
        """Tasks this run may still have made (its share, for a shard)."""
        return max(0, self.allowance - self.counted() - self.held)

    def hold(self) -> Hold | None:
        """Take one task's worth of the budget, or None when it does not fit."""
        if not self.room():
            return None
        self.held += 1
        return Hold(self)

    async def wait_for_room(self) -> bool:
        """True once one more task fits; False when it cannot (nothing is on its way whose
        outcome could free a place: a refused submit makes no task)."""
        while not self.room():
            if self.held == 0:
                return False
            self._changed = anyio.Event()
            await self._changed.wait()
        return True

    def _released(self) -> None:
        self.held -= 1
        if self._changed is not None:
            self._changed.set()

    def reached(self) -> BudgetReached:
        s = self.spend()
        spent = s.spent or 0.0
        max_cost = s.max_cost or 0.0
        share = (f"; this {self.share} may spend {cost_of(self.allowance, s.price):g} of it "
                 f"(its share)" if self.share else "")
        return BudgetReached(
            f"stopped by the budget: spent {spent:g} of max_cost {max_cost:g} ({s.tasks} task(s) at "
            f"{s.price:g}){share}; one more could pass it. Raise max_cost (or --max-cost) and run "
            f"again to go on", spent=spent, max_cost=max_cost)


def budget_for(ledger: Ledger, folder: Path, max_cost: float | None, price: float | None,
               shard: ShardPart | None) -> Budget | None:
    """The gate for a run writing ``ledger`` (None: no budget, or images that cost nothing).

    Read once the ledger is open: its own file's tasks and the folder's others are known."""
    if max_cost is None or not price:
        return None

    def spend() -> Spend:
        return Spend(ledger.stats.tasks_created + ledger.others.tasks_created, price, max_cost)

    affordable = spend().affordable or 0
    if shard is None or shard.count <= 1:
        return Budget(affordable, lambda: spend().tasks, spend)
    # The other ledgers' tasks, less this count's other shards: what was spent before the shards.
    before = max(0, ledger.others.tasks_created - sibling_tasks(folder, shard))
    base, extra = divmod(max(0, affordable - before), shard.count)
    allowance = base + (1 if shard.index < extra else 0)
    return Budget(allowance, lambda: ledger.stats.tasks_created, spend,
                  share=f"shard {shard.index}/{shard.count}")
