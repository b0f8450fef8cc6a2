"""``order: spread``: the manifest's jobs in an order whose every prefix samples the matrix
evenly, so a cut (``--max-jobs``, a budget, a deadline, a crash) leaves an even sample of it
rather than its first corner.

The product is walked by a counter ``t``; every axis counts ``t`` modulo its size, shifted by
one whenever the axes before it have met it in every combination they can (see ``_sheared``).
So every axis steps to its next value at every job, and in any prefix no value of an axis is
used more than once more than another: ``style: [a, b, c]`` x ``seed: [1, 2, 3]`` goes (a,1)
(b,2) (c,3) (a,2) (b,3) (c,1) ... Replicas (``repeat``) come in later rounds (every cell once
before any cell twice), includes after the product.

Lazy and stable: each axis's values are held once (the sum of the axis sizes, never their
product), the order depends only on the manifest, and every job keeps the id, index and
file name it has in written order (index and names are computed from the cell's written
position). Only identical requests from different cells (``plan`` warns about them) may swap
which of them gets which replica number.
"""

from __future__ import annotations

import copy
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from itertools import product
from math import lcm
from typing import Any

from batchgen.errors import Problem
from batchgen.job import Job
from batchgen.manifest.axes import Entry
from batchgen.manifest.expand import Expansion

__all__ = ["ORDERS", "spread_cells", "spread_jobs"]

ORDERS = ("written", "spread")

Cell = tuple[dict[str, Any], dict[str, Any], int]


def spread_jobs(expansion: Expansion) -> Iterator[Job | Problem]:
    """The expansion's jobs in spread order (a new pass per call), as ``iter_jobs`` makes them."""
    once = copy.copy(expansion)
    once.repeat = 1  # the rounds of replicas are the cells' own: see spread_cells
    return once.iter_jobs(cells=spread_cells(expansion))


def spread_cells(expansion: Expansion) -> Iterator[Cell | Problem]:
    """(context, record, written index) of every job's cell, in spread order."""
    entries: list[list[Entry]] = []
    for ax in expansion.axes:
        values: list[Entry] = []
        for item in ax.for_pass(inner=False):
            if isinstance(item, Problem):
                yield item  # a broken manifest: the pass reports it, nothing is run
                return
            values.append(item)
        entries.append(values)
    sizes = [len(values) for values in entries]
    total = 1
    for n in sizes:
        total *= n
    strides = [1] * len(sizes)  # written order: the first axis outermost
    for j in range(len(sizes) - 2, -1, -1):
        strides[j] = strides[j + 1] * sizes[j + 1]
    dropped = _excluded_positions(expansion, entries) if expansion.excludes else array("Q")
    kept = total - len(dropped) if sizes else 1
    base, repeat = expansion.base, expansion.repeat
    for copy_no in range(repeat):
        if not sizes:
            yield dict(base), {}, copy_no
        else:
            for digits in _sheared(sizes):
                ctx, rec = dict(base), {}
                position = 0
                for j, d in enumerate(digits):
                    assign, record = entries[j][d]
                    ctx.update(assign)
                    rec.update(record)
                    position += d * strides[j]
                if expansion.excludes and expansion._excluded(ctx, None):
                    continue
                rank = position - bisect_left(dropped, position)
                yield ctx, rec, rank * repeat + copy_no
        for i, inc in enumerate(expansion.includes):
            yield {**base, **inc.assign}, dict(inc.record), (kept + i) * repeat + copy_no


def _sheared(sizes: list[int]) -> Iterator[list[int]]:
    """Digits of every cell in spread order, a bijection onto the product.

    The first ``j`` axes repeat with period ``P_j = n_1 ... n_j``. Axis ``j`` counts ``t``
    modulo ``n_j``, shifted by one after every ``L_j = lcm(P_(j-1), n_j)`` steps: within a
    block it meets each combination of the axes before it at most once (as in the Chinese
    remainder theorem), and the ``gcd(P_(j-1), n_j)`` blocks take the other combinations. So
    every axis cycles through its values, and in any prefix no value of an axis is used more
    than once more than another."""
    params = []
    period = 1
    for n in sizes:
        params.append((n, lcm(period, n), period * n))
        period *= n
    for t in range(period):
        yield [(t % p + t % p // block) % n for n, block, p in params]


def _excluded_positions(expansion: Expansion, entries: list[list[Entry]]) -> array:
    """Written positions of the excluded cells, sorted (8 bytes each), so a cell's written
    index is its position less the exclusions before it."""
    dropped = array("Q")
    base = expansion.base
    for position, cell in enumerate(product(*entries)):
        ctx = dict(base)
        for assign, _ in cell:
            ctx.update(assign)
        if expansion._excluded(ctx, None):
            dropped.append(position)
    return dropped
