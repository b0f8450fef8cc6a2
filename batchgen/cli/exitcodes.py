"""The CLI's exit codes, in one table: how a run's outcome and an error become a number.

    0 all done            1 some jobs failed        2 bad input or usage
    3 stopped by the provider (key, balance, endpoint)
    4 output folder not writable or disk full     5 stopped by the budget (max_cost)
    130 interrupted
"""

from __future__ import annotations

from batchgen.engine.summary import RunOutcome, RunSummary

__all__ = ["EXIT_CODES", "exit_code"]

EXIT_CODES = {
    RunOutcome.FINISHED: 0,
    RunOutcome.JOBS_FAILED: 1,
    RunOutcome.STOPPED: 3,
    RunOutcome.OUTPUT_FAILED: 4,
    RunOutcome.BUDGET: 5,
    RunOutcome.INTERRUPTED: 130,
}


def exit_code(summary: RunSummary) -> int:
    return EXIT_CODES[summary.outcome]
