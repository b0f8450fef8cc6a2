"""The limits on their own: what each pattern of 429s is taken for, and what follows from it."""

from __future__ import annotations

import itertools

import anyio
import pytest

from batchgen.provider.limits import AdaptiveLimit, Limits, RateWindow, Refusal, RetryBudget
from vclock import VIRTUAL_TIME

pytestmark = pytest.mark.anyio

_ids = itertools.count()


async def accept(limits: Limits) -> str:
    """One submit the provider takes."""
    assert await limits.turn(lambda: True)
    task_id = f"t{next(_ids)}"
    limits.accepted(task_id)
    return task_id


async def refuse(limits: Limits, retry_after: float | None = None) -> Refusal:
    assert await limits.turn(lambda: True)
    return limits.refused(retry_after)


@VIRTUAL_TIME
async def test_a_burst_of_refusals_with_k_tasks_out_is_one_cut_to_k() -> None:
    limits = Limits(32, parallel=6)
    for _ in range(8):
        await accept(limits)
    for _ in range(6):                                     # six submits on the wire at once
        assert await limits.turn(lambda: True)
    verdicts = [limits.refused(None) for _ in range(6)]    # all refused with 8 out
    assert verdicts[0] is Refusal.OVERLOAD                 # one refusal alone is never a limit
    assert Refusal.TASK_CAP in verdicts
    assert limits.tasks.slots == 8 and limits.tasks.known_cap == 8   # one cut, to what was taken
    assert limits.snapshot().limit == 8


@VIRTUAL_TIME
async def test_a_cut_limit_holds_submits_until_a_task_ends() -> None:
    limits = Limits(4)
    tasks = [await accept(limits) for _ in range(2)]
    for _ in range(3):
        await refuse(limits)
    assert limits.tasks.slots == 2
    went = []

    async def submitter() -> None:
        went.append(await limits.turn(lambda: True))

    async with anyio.create_task_group() as group:
        group.start_soon(submitter)
        await anyio.sleep(30)
        assert went == []              # no room: waits, and sends nothing
        limits.ended(tasks[0])         # a poll saw a task finish
        await anyio.sleep(0)
    assert went == [True]


@VIRTUAL_TIME
async def test_the_limit_grows_back_by_one_per_limit_accepts_and_probes_a_refused_level_rarely() -> None:
    limits = Limits(16)
    out = [await accept(limits) for _ in range(8)]
    for _ in range(3):
        await refuse(limits)
    assert limits.tasks.slots == 8

    def cycle() -> None:
        limits.ended(out.pop(0))

    probes = []
    for _ in range(200):      # keep 7..8 out: the limit binds
        cycle()
        out.append(await accept(limits))
        if limits.tasks.slots > 8:
            probes.append(limits.tasks.path.total())
            for _ in range(4):
                await refuse(limits)   # the provider still takes 8, not 9
                if limits.tasks.slots == 8:
                    break
            assert limits.tasks.slots == 8
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert len(probes) >= 3 and gaps == sorted(gaps) and gaps[-1] > gaps[0]   # ever more rarely


def test_additive_increase_and_the_ceiling() -> None:
    limit = AdaptiveLimit(10)
    limit.cut(4)
    assert limit.slots == 4
    limit.known_cap = None
    accepts = 0
    while limit.slots == 4:
        limit.accepted(level=3, binding=True)
        accepts += 1
    assert limit.slots == 5 and 4 <= accepts <= 5   # one more slot per `limit` accepted submits
    for _ in range(200):
        limit.accepted(level=9, binding=True)
    assert limit.slots == 10          # never past the concurrency asked for
    unused = AdaptiveLimit(10)
    unused.cut(3)
    unused.known_cap = None
    for _ in range(50):
        unused.accepted(level=0, binding=False)
    assert unused.slots == 3          # a limit nobody uses does not grow


@VIRTUAL_TIME
async def test_sporadic_429s_leave_the_limit_alone() -> None:
    limits = Limits(32)
    out = [await accept(limits) for _ in range(31)]
    for n in range(400):              # one in ten refused, at random levels, never twice in a row
        limits.ended(out.pop(0))
        if n % 10 == 3:
            assert await refuse(limits, retry_after=1.0 if n % 20 == 3 else None) is Refusal.OVERLOAD
        out.append(await accept(limits))
    assert limits.tasks.slots == 32 and limits.snapshot().paused_for == 0
    assert limits.refusals == {Refusal.OVERLOAD: 40}


@VIRTUAL_TIME
async def test_refusals_taken_for_overload_count_as_sporadic_though_fewer_are_out_at_the_next_accept() -> None:
    """Refusals with 31 out, each run of them followed by an accept with fewer out (tasks
    ended meanwhile): all were overload that passed, so the rate of sporadic refusals learned
    is about one in eight, and a later pair is still put down to chance, not to a cap."""
    limits = Limits(32)
    out = [await accept(limits) for _ in range(31)]
    verdicts = []
    with anyio.fail_after(600):   # (a cut to 31 would leave a submit waiting for ever)
        for n in range(30):
            for _ in range(8):
                limits.ended(out.pop(0))
                out.append(await accept(limits))
            verdicts.append(await refuse(limits))
            if n >= 10:
                verdicts.append(await refuse(limits))   # two in a row
            limits.ended(out.pop(0))
            limits.ended(out.pop(0))
            out.append(await accept(limits))
            out.append(await accept(limits))
    assert set(verdicts) == {Refusal.OVERLOAD} and limits.tasks.slots == 32


@VIRTUAL_TIME
async def test_refusals_below_the_level_last_taken_are_the_rate_window_which_is_learned() -> None:
    t0 = anyio.current_time()
    limits = Limits(32)
    out = [await accept(limits) for _ in range(30)]
    for _ in range(30):               # 60 taken within a second or so
        limits.ended(out.pop(0))
        out.append(await accept(limits))
        await anyio.sleep(0.01)
    verdicts = []
    while Refusal.RATE_WINDOW not in verdicts:
        verdicts.append(await refuse(limits))
        limits.ended(out.pop(0))      # tasks keep ending: fewer out, refused all the same
        assert len(verdicts) < 8
    assert limits.window.per_window == 60 and limits.window.learned
    assert limits.tasks.slots == 32   # the cut blamed on a cap is undone
    probes = 0
    while True:                       # probes now and then; the window itself opens at 60 s
        assert await limits.turn(lambda: True)
        if anyio.current_time() - t0 >= 60.0:
            break
        probes += 1
        limits.refused(None)          # the provider still says no
    assert 1 <= probes <= 9
    limits.accepted("after")


@VIRTUAL_TIME
async def test_a_learned_window_is_probed_at_a_bounded_cadence() -> None:
    t0 = anyio.current_time()
    limits = Limits(8)
    for n in range(10):
        limits.accepted(f"early{n}") if await limits.turn(lambda: True) else None
        limits.ended(f"early{n}")
    while limits.window.per_window is None:   # refused with nothing out: not a cap
        await refuse(limits)
    assert limits.window.per_window == 10
    probes = []
    while anyio.current_time() - t0 < 55:     # the window opens at 60: every turn before is a probe
        assert await limits.turn(lambda: True)
        probes.append(anyio.current_time())
        limits.refused(None)
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    # Doubling to half the window: where refusals count, each refused probe holds a place
    # for a whole window, so a minute sees a handful of them, not one every ten seconds.
    assert gaps == sorted(gaps) and max(gaps) <= 30.0 + 1e-6 and len(probes) <= 5


@VIRTUAL_TIME
async def test_a_given_rate_bursts_up_to_the_limit_and_never_over() -> None:
    limits = Limits(100, rate_per_minute=20)
    times = []
    t0 = anyio.current_time()
    for n in range(45):
        assert await limits.turn(lambda: True)
        times.append(anyio.current_time() - t0)
        limits.accepted(f"r{n}")
        limits.ended(f"r{n}")
        await anyio.sleep(0.5)
    assert times[19] < 10 and times[20] >= 60     # 20 at once, the 21st a minute after the first
    for i, t in enumerate(times):                   # no 60 s window holds more than 20
        assert sum(1 for u in times[i:] if u < t + 60) <= 20


@VIRTUAL_TIME
async def test_retry_after_on_a_rate_window_pauses_everyone_for_that_long() -> None:
    limits = Limits(8)
    for task_id in [await accept(limits) for _ in range(5)]:
        limits.ended(task_id)          # nothing out: a cap cannot explain what follows
    verdict = None
    while verdict is not Refusal.RATE_WINDOW:
        verdict = await refuse(limits, retry_after=42.0)
    assert 41.5 < limits.snapshot().paused_for <= 42.0 + 1e-9   # the clock's float sums
    started = anyio.current_time()
    assert await limits.turn(lambda: True)
    assert anyio.current_time() - started >= 41.5


@VIRTUAL_TIME
async def test_stop_ends_every_wait_at_once() -> None:
    limits = Limits(1)
    await accept(limits)
    results = []

    async def waiter() -> None:
        results.append(await limits.turn(lambda: True))

    async def holder() -> None:
        results.append(await limits.hold(300))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(waiter)
        group.start_soon(holder)
        await anyio.sleep(10)
        started = anyio.current_time()
        limits.stop()
    assert results == [False] * 4 and anyio.current_time() == started


@VIRTUAL_TIME
async def test_a_waiter_that_is_no_longer_wanted_leaves_the_queue() -> None:
    limits = Limits(1)
    first = await accept(limits)
    wanted = [True]
    results = []

    async def waiter(name: str, check) -> None:
        results.append((name, await limits.turn(check)))

    async with anyio.create_task_group() as group:
        group.start_soon(waiter, "a", lambda: wanted[0])
        group.start_soon(waiter, "b", lambda: True)
        await anyio.sleep(1)
        wanted[0] = False
        limits.ended(first)
    assert sorted(results) == [("a", False), ("b", True)]   # the one still wanted got the turn


@VIRTUAL_TIME
async def test_the_retry_budget_slows_a_storm_to_a_trickle() -> None:
    budget = RetryBudget(ratio=0.2, per_second=1.0, burst=5.0)
    started = anyio.current_time()
    for _ in range(25):
        while (wait := budget.wait_for()) > 0:
            await anyio.sleep(wait)
        budget.spend()
    took = anyio.current_time() - started
    assert 19.5 <= took <= 20.5       # 5 at once, then one a second
    for _ in range(10):
        budget.earn()                 # answered requests earn retries back
    assert budget.wait_for() == 0


def test_a_window_without_limit_keeps_only_the_last_minute() -> None:
    window = RateWindow(None)
    for n in range(100_000):
        window.record(n * 0.01)       # 100 a second for 1000 s
    assert window.count(1000.0) <= 6002 and len(window._times) <= 6002


@VIRTUAL_TIME
async def test_a_window_that_counts_refusals_counts_them_here_too() -> None:
    t0 = anyio.current_time()
    limits = Limits(8)
    for n in range(4):
        assert await limits.turn(lambda: True)
        limits.accepted(f"a{n}")
        limits.ended(f"a{n}")
    await anyio.sleep(30)
    while limits.window.per_window is None:     # refused half a minute later: the window
        assert await limits.turn(lambda: True)
        limits.refused(None)
    refused_at = anyio.current_time() - t0
    assert limits.window.per_window == 4 and not limits.window.counts_refusals
    await anyio.sleep(60.5 - (anyio.current_time() - t0))   # the accepted ones aged out
    assert await limits.turn(lambda: True)
    limits.refused(None)                        # yet refused: the refusals still fill it
    window = limits.window
    assert window.counts_refusals and window.per_window == 4   # the size stands
    assert window.opens_at(anyio.current_time()) - t0 >= refused_at + 59


@VIRTUAL_TIME
async def test_random_refusals_with_retry_after_cost_no_retry_token() -> None:
    limits = Limits(8)
    budget = limits.budget
    for n in range(200):
        assert await limits.turn(lambda: True)
        if n % 10 == 0:
            limits.refused(1.0)
        else:
            limits.accepted(f"t{n}")
            limits.ended(f"t{n}")
    assert budget.spent == 0 and budget.wait_for() == 0
    assert limits.tasks.slots == 8


# -- a task whose poll was refused: presumed finished once its expected end has passed -----------

async def learned(limits: Limits, seconds: float = 0.5, tasks: int = 10) -> None:
    """``tasks`` tasks that each took ``seconds``: what a task's expected end is learned from."""
    for _ in range(tasks):
        task_id = await accept(limits)
        await anyio.sleep(seconds)
        limits.ended(task_id)


async def turn_within(limits: Limits, seconds: float) -> bool:
    """Whether a submit gets its turn within ``seconds``."""
    with anyio.move_on_after(seconds):
        assert await limits.turn(lambda: True)
        limits.released()
        return True
    return False


@VIRTUAL_TIME
async def test_a_task_whose_poll_waits_a_retry_after_frees_its_slot_once_it_should_have_ended() -> None:
    limits = Limits(4)
    await learned(limits)
    tasks = [await accept(limits) for _ in range(4)]
    await anyio.sleep(0.3)
    limits.poll_deferred(tasks[0], 1.0)        # refused 0.3 s in, with Retry-After: 1
    assert not await turn_within(limits, 0.1)  # 0.4 s in: not expected to have ended yet
    start = anyio.current_time()
    assert await turn_within(limits, 0.5)      # its slot frees at its expected end (0.5 s)
    assert 0.05 <= anyio.current_time() - start <= 0.15
    limits.poll_answered(tasks[0])             # the poll says it still runs: counted again
    assert not await turn_within(limits, 5.0)
    limits.ended(tasks[1])
    assert await turn_within(limits, 0.01)


@VIRTUAL_TIME
async def test_a_poll_that_will_be_retried_before_the_task_ends_frees_nothing() -> None:
    limits = Limits(4)
    await learned(limits)
    tasks = [await accept(limits) for _ in range(4)]
    await anyio.sleep(0.1)
    limits.poll_deferred(tasks[0], 0.2)        # asked again at 0.3 s, before its end at 0.5 s
    assert not await turn_within(limits, 2.0)


@VIRTUAL_TIME
async def test_nothing_is_presumed_before_durations_are_known_but_an_eta_is_enough() -> None:
    limits = Limits(4)
    tasks = [await accept(limits) for _ in range(4)]
    limits.poll_deferred(tasks[0], 1.0)
    assert not await turn_within(limits, 2.0)  # no duration seen, no eta: it may still run
    limits.poll_answered(tasks[0])
    limits.expect(tasks[0], anyio.current_time() + 1.0)   # a poll said: eta 1 s
    limits.poll_deferred(tasks[0], 2.0)
    start = anyio.current_time()
    assert await turn_within(limits, 3.0)
    assert anyio.current_time() - start == pytest.approx(1.0, abs=0.01)


@VIRTUAL_TIME
async def test_at_most_a_quarter_of_the_limit_is_presumed_finished() -> None:
    limits = Limits(8)
    await learned(limits)
    tasks = [await accept(limits) for _ in range(8)]
    await anyio.sleep(0.6)
    for task_id in tasks:                      # every poll refused: all past their end
        limits.poll_deferred(task_id, 1.0)
    went = 0
    while await turn_within(limits, 0.01):
        went += 1
        await accept_now(limits)
    assert went == 2                           # 8 // 4 slots, no more
    assert limits.in_flight == 10


@VIRTUAL_TIME
async def test_under_a_limit_of_4_no_task_is_presumed_finished() -> None:
    limits = Limits(3)
    await learned(limits)
    tasks = [await accept(limits) for _ in range(3)]
    await anyio.sleep(0.6)
    limits.poll_deferred(tasks[0], 1.0)
    assert not await turn_within(limits, 0.9)


async def accept_now(limits: Limits) -> None:
    assert await limits.turn(lambda: True)
    limits.accepted(f"t{next(_ids)}")


@VIRTUAL_TIME
async def test_two_refused_submits_in_a_row_count_every_presumed_task_again() -> None:
    limits = Limits(8)
    await learned(limits)
    tasks = [await accept(limits) for _ in range(8)]
    await anyio.sleep(0.6)
    limits.poll_deferred(tasks[0], 1.0)
    limits.poll_deferred(tasks[1], 1.0)
    assert await refuse(limits) is Refusal.OVERLOAD   # one refusal: chance; still presumed
    assert await turn_within(limits, 0.01)
    await refuse(limits)                               # a second: the cap may be here
    assert not await turn_within(limits, 0.3)          # both count again until an accept
    limits.ended(tasks[2])
    await accept_now(limits)
    assert await turn_within(limits, 0.01)             # the episode is over: presumed again


@VIRTUAL_TIME
async def test_another_try_of_a_refused_submit_goes_before_those_waiting_their_first() -> None:
    limits = Limits(1)
    task_id = await accept(limits)
    order: list[str] = []

    async def submit(name: str, again: bool) -> None:
        assert await limits.turn(lambda: True, again=again)
        order.append(name)
        limits.accepted(name)

    async with anyio.create_task_group() as group:
        group.start_soon(submit, "first", False)
        await anyio.sleep(0.1)
        group.start_soon(submit, "second", False)
        await anyio.sleep(0.1)
        group.start_soon(submit, "refused before", True)
        await anyio.sleep(0.1)
        limits.ended(task_id)
        await anyio.sleep(0.1)
        limits.ended(order[-1])
        await anyio.sleep(0.1)
        limits.ended(order[-1])
    assert order == ["refused before", "first", "second"]
