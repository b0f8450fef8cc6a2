"""How much the provider is asked at once: the adaptive limit on tasks in flight, the rate
window, the retry budget, and which kind of 429 each refusal was.

A provider says no in three ways that look alike on the wire (429 RATE_LIMIT_EXCEEDED): too
many tasks in flight, too many submits in the last minute, or a passing overload. Each needs
its own answer: bring the limit on tasks in flight down to what the provider took, wait for
the minute's window to open, or retry only that one request. ``Limits`` tells them apart by
when refusals come (how many tasks were out, whether the next try was taken, whether a lower
level was refused too) and is the one place every submitter waits. Pure logic over an injected
clock: nothing here sends a request, and every wait ends at once when the batch stops.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import anyio

from batchgen.provider.pacing import PaceReport

__all__ = ["AdaptiveLimit", "Limits", "PaceReport", "PaceSnapshot", "RateWindow", "Refusal",
           "RetryBudget"]

_GO = -math.inf
_WAIT = math.inf
# A run of refusals is put down to chance (sporadic overload) while chance explains it better
# than this: for the task cap (a cut is cheap to undo) and for the rate window (everyone waits).
_UNLIKELY_CAP = 1e-3
_UNLIKELY_RATE = 1e-6
# What is believed of sporadic refusals before any are seen: about one in twenty, from 50 answers.
_PRIOR_SPORADIC, _PRIOR_ANSWERS = 2.5, 50.0
# A probe taken less than this before the learned window's opening proves the window no wrong:
# the provider stamps a submit before its answer comes back here.
_PROBE_SLACK = 1.0
# The shortest pause after a refusal the window as believed does not explain.
_MIN_PAUSE = 0.5
# Tasks whose poll was refused, and whose expected end has passed, are presumed finished (not
# counted against the limit) until their poll is answered: at most this share of the limit.
_PRESUMED_SHARE = 0.25
# How a task's end is expected without an eta: this quantile of the durations seen so far
# (submit accepted -> seen finished, so a little long), once this many were seen.
_END_QUANTILE, _END_SAMPLES = 0.75, 10


class Refusal(StrEnum):
    """What a 429 to a submit was taken for; each gets its own answer."""

    OVERLOAD = "overload"        # passing: only that request waits (Retry-After, else a short backoff)
    TASK_CAP = "task cap"        # too many tasks in flight: the limit comes down to what was taken
    RATE_WINDOW = "rate window"  # too many submits this minute: everyone waits for the window


class AdaptiveLimit:
    """Tasks in flight allowed, between 1 and ``ceiling`` (the ``concurrency`` asked for).

    Starts at the ceiling. When the provider refuses a submit with ``k`` tasks out, it drops
    to ``k``: a measurement, so a burst of refusals at one level is one cut, not thirty. While
    the limit is used it grows by one for every ``limit`` submits accepted (additive increase);
    past a level the provider refused it grows only after a number of accepted submits that
    doubles with every failed probe, so probing the cap costs a few refusals, not one in eight.
    ``path`` counts the limit in force at each accepted submit (min / median / max of a run).
    """

    def __init__(self, ceiling: int, floor: int = 1) -> None:
        self.ceiling = max(1, int(ceiling))
        self.floor = max(1, min(floor, self.ceiling))
        self.value = float(self.ceiling)
        self.known_cap: int | None = None
        self._probe_every = 0
        self._credit = 0
        self.path: Counter[int] = Counter()

    @property
    def slots(self) -> int:
        return max(self.floor, int(self.value))

    def accepted(self, level: int, binding: bool) -> None:
        """A submit was taken with ``level`` tasks out; ``binding``: the limit was in use."""
        self.path[self.slots] += 1
        cap = self.known_cap
        if cap is not None and level >= cap:
            self.known_cap = None            # the provider took more than it refused before
            self._probe_every = self._credit = 0
            cap = None
        if not binding or self.value >= self.ceiling:
            return
        if cap is not None and self.value + 1.0 / self.value >= cap + 1:
            self._credit += 1                # at the refused level: probe past it now and then
            if self._credit >= self._probe_every:
                self._credit = 0
                self.value = float(min(self.ceiling, cap + 1))
            return
        self.value = min(float(self.ceiling), self.value + 1.0 / self.value)

    def cut(self, level: int) -> None:
        """The provider refused a submit with ``level`` tasks out."""
        level = max(self.floor, level)
        if self.known_cap is not None and level >= self.known_cap:
            self._probe_every = min(self._probe_every * 2, 16 * max(level, 4))
        else:
            self._probe_every = 2 * max(level, 4)
        self._credit = 0
        self.known_cap = level
        self.value = float(max(self.floor, min(self.value, level)))

    def restore(self, value: float) -> None:
        """Undo cuts a refusal was wrongly blamed for (it was the rate window, not the cap)."""
        self.value = max(self.value, min(float(self.ceiling), value))
        self.known_cap = None
        self._probe_every = self._credit = 0


class RateWindow:
    """Submits accepted in the last ``seconds``; never more than ``per_window`` of them.

    Acceptances are stamped when the answer arrives, after the provider stamped them, so a
    slot that frees here has freed there too: the window bursts up to the limit and never
    over. ``pending`` counts submits on their way, which take a place until answered.

    Some providers count every submit they see in the window, refused ones too, so a retry
    sent early pushes the window's opening further out. Refusals are kept here as well and
    count once ``counts_refusals`` is set, which ``Limits`` does on evidence: a refusal while
    the window as believed had room and refusals were in it.
    """

    def __init__(self, per_window: int | None, seconds: float = 60.0, margin: float = 0.01) -> None:
        self.per_window = per_window
        self.seconds = seconds
        self.margin = margin
        self.learned = False
        self.counts_refusals = False
        self.known = per_window   # the last size given or learned, kept when one is forgotten
        self.pending = 0
        self._times: deque[float] = deque()
        self._refused: deque[float] = deque()

    def _trim(self, times: deque[float], now: float) -> int:
        edge = now - self.seconds - self.margin
        while times and times[0] <= edge:
            times.popleft()
        return len(times)

    def count(self, now: float) -> int:
        """Accepted submits in the window."""
        return self._trim(self._times, now)

    def refused_count(self, now: float) -> int:
        """Refused submits in the window (they take a place only if ``counts_refusals``)."""
        return self._trim(self._refused, now)

    def opens_at(self, now: float) -> float:
        """When the next submit may go (``now`` when it may go now)."""
        limit = self.per_window
        if limit is None:
            return now
        held = self.count(now) + self.pending
        times: deque[float] | list[float] = self._times
        if self.counts_refusals and self.refused_count(now):
            held += len(self._refused)
            times = list(heapq.merge(self._times, self._refused))
        if held < limit:
            return now
        index = held - limit
        if index >= len(times):   # only submits on their way fill it: wait for their answers
            return math.inf
        return times[index] + self.seconds + self.margin

    def next_free(self, now: float) -> float:
        """When the oldest submit in the window (accepted or refused) ages out (inf: none)."""
        oldest = min(self._times[0] if self.count(now) else math.inf,
                     self._refused[0] if self.refused_count(now) else math.inf)
        return oldest + self.seconds + self.margin

    def record(self, now: float) -> None:
        self._times.append(now)
        if self._times[0] <= now - self.seconds - self.margin:
            self.count(now)   # keep only the window: flat memory however long the run

    def record_refusal(self, now: float) -> None:
        self._refused.append(now)
        if self._refused[0] <= now - self.seconds - self.margin:
            self.refused_count(now)

    def learn(self, per_window: int) -> None:
        self.per_window = max(1, per_window)
        self.learned = True

    def forget(self) -> None:
        """Drop a learned limit (the provider took more than it allowed); whether refusals
        count is the provider's way of counting, not its size, and stays."""
        self.per_window = None
        self.learned = False


class RetryBudget:
    """Retries allowed: a share of the requests that went well, plus a trickle.

    Every retry (after a 5xx, a broken connection, a 429 without Retry-After, a failed
    download) spends a token; every request that went well (an accepted submit, an answered
    poll, a download) earns ``ratio`` of one; time adds ``per_second``. So sporadic failures
    while most requests succeed never drain it (up to one failure in six pays for itself), and
    a 429 with Retry-After costs nothing (the provider named the wait: that is its pacing, not
    an outage). In an outage, when nothing goes through, all retries together slow to
    ``per_second``, so thousands of tasks waiting on one broken host never become a storm.
    """

    def __init__(self, ratio: float = 0.2, per_second: float = 1.0, burst: float = 20.0, *,
                 now: Callable[[], float] = anyio.current_time) -> None:
        self.ratio = ratio
        self.per_second = per_second
        self.burst = burst
        self._now = now
        self._tokens = burst
        self._at: float | None = None
        self.spent = 0

    def _refill(self) -> float:
        now = self._now()
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        return now

    def earn(self) -> None:
        if self._tokens < self.burst:
            self._tokens = min(self.burst, self._tokens + self.ratio)

    def wait_for(self) -> float:
        """Seconds until a retry may go (0 when one may go now)."""
        self._refill()
        missing = 1.0 - self._tokens
        # A hair short after waiting exactly the computed time is rounding, not a missing token.
        return 0.0 if missing <= 1e-9 else missing / self.per_second

    def spend(self) -> None:
        self._refill()
        self._tokens -= 1
        self.spent += 1

    def try_spend(self) -> bool:
        """Spend a token if one is there now; False (and nothing spent) otherwise."""
        if self.wait_for() > 0:
            return False
        self.spend()
        return True


@dataclass(frozen=True, slots=True)
class PaceSnapshot:
    """What the limits are now: for the progress line and ``status``."""

    in_flight: int
    limit: int
    ceiling: int
    paused_for: float               # seconds until submits may go again (rate window, Retry-After)
    window: int | None              # submits per window allowed (given or learned)
    window_learned: bool
    outage_for: float | None        # seconds the provider has been unreachable (after answering)

    def to_json(self) -> dict:
        return {"in_flight": self.in_flight, "limit": self.limit, "ceiling": self.ceiling,
                "paused_for": round(self.paused_for, 1), "window": self.window,
                "window_learned": self.window_learned,
                "outage_for": None if self.outage_for is None else round(self.outage_for, 1)}


class _Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: anyio.Event | None = None


class Limits:
    """The one place submitters wait, and what the provider's answers taught about its limits.

    A submit asks ``turn()`` (which waits for a free slot, an open rate window and the end of
    any pause, first come first served) and then reports exactly one of ``accepted(task_id)``,
    ``refused(retry_after)`` or ``released()``. A task stays in flight until ``ended(task_id)``
    (the client says it when a poll sees the task finished or forgotten, the engine when it
    stops following it; saying it twice is harmless); ``adopt(task_id)`` counts a task an
    earlier run left at the provider. ``stop()`` ends every wait at once.

    A task whose poll the provider refused (``poll_deferred``) cannot be asked again before it
    says, yet it has most likely finished there: once its expected end has passed (its eta,
    else the durations seen so far) it is presumed finished and not counted against the limit
    until its poll is answered (``poll_answered``). At most a quarter of the limit (rounded
    down: none under 4) is presumed so, and none once two submits in a row are refused, so a cap
    on tasks in flight is still found and the provider holds at most that many more for a moment.
    """

    def __init__(self, ceiling: int, rate_per_minute: float | None = None, *,
                 now: Callable[[], float] = anyio.current_time, parallel: int = 1,
                 window_seconds: float = 60.0, budget: RetryBudget | None = None,
                 probe_gap: tuple[float, float] = (2.0, 10.0)) -> None:
        self._now = now
        # Submits on the wire at once. A crash can leave each of them as a task whose id never
        # reached the ledger, so one keeps that to one task per crash; a turn is given only
        # right before its request goes out, so no turn outlives a change of the limits.
        self.parallel = max(1, parallel)
        self.tasks = AdaptiveLimit(ceiling)
        per_window = None if rate_per_minute is None else max(1, int(rate_per_minute * window_seconds / 60.0))
        self.window = RateWindow(per_window, window_seconds)
        self.budget = budget or RetryBudget(now=now)
        self._tasks: set[str] = set()
        self.stopped = False
        self.refusals: Counter[Refusal] = Counter()
        self._sending = 0
        self._paused_until = -math.inf
        self._probe_gap_min, self._probe_gap_max = probe_gap
        self._probe_gap = self._probe_gap_min
        self._probe_at: float | None = None
        self._probing = False
        self._probe_early = 0.0   # how long before the window's opening the probe went
        self._outage_since: float | None = None
        # The current run of refusals (since the last accepted submit): its levels, the limit
        # before it cut anything, whether it was put down to the rate window.
        self._strikes = 0
        self._levels: list[int] = []
        self._limit_before: float | None = None
        self._cut_at: int | None = None
        self._rate_episode = False
        self._accept_level = 0
        self._answers = 0.0
        self._sporadic = 0.0
        self._queue: deque[_Waiter] = deque()
        self._stop_event: anyio.Event | None = None
        # Presumed finished: when each task was accepted, the eta bound a poll gave, the time
        # from which a task with a refused poll counts as finished, and the durations seen.
        self._accepted_at: dict[str, float] = {}
        self._eta_end: dict[str, float] = {}
        self._deferred: dict[str, float] = {}
        self._durations: deque[float] = deque(maxlen=256)
        self._end_estimate: float | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- waiting ------------------------------------------------------------------------------

    async def turn(self, wanted: Callable[[], bool], retry: bool = False, again: bool = False) -> bool:
        """Wait until a submit may go and hold its place; False when the batch stopped or
        ``wanted()`` said no while waiting. ``retry``: this is another try, paid from the budget.
        ``again``: another try of a submit that already had its turn; it goes first, since it
        waited its turn once and then what the provider asked (a job refused late is what
        the end of a batch waits for)."""
        if (again or not self._queue) and not self.stopped and wanted():
            until = self._blocked(self._now(), retry)
            if until == _GO:
                self._take(retry)
                return True
        me = _Waiter()
        if again:
            self._queue.appendleft(me)
        else:
            self._queue.append(me)
        try:
            while True:
                if self.stopped or not wanted():
                    return False
                until = _WAIT
                if self._queue[0] is me:
                    now = self._now()
                    until = self._blocked(now, retry)
                    if until == _GO:
                        self._queue.popleft()
                        self._take(retry)
                        self._wake_head()   # there may be room for the next one too
                        return True
                    if until != _WAIT:
                        until -= now
                me.event = event = anyio.Event()
                if until == _WAIT:
                    await event.wait()
                else:
                    with anyio.move_on_after(until):
                        await event.wait()
        finally:
            if me in self._queue:
                head = self._queue[0] is me
                self._queue.remove(me)
                if head:
                    self._wake_head()

    async def hold(self, seconds: float) -> bool:
        """Sleep ``seconds`` (one refused request's own wait); False at once if the batch stops."""
        if self.stopped:
            return False
        if seconds > 0:
            if self._stop_event is None:
                self._stop_event = anyio.Event()
            with anyio.move_on_after(seconds):
                await self._stop_event.wait()
        return not self.stopped

    def _blocked(self, now: float, retry: bool) -> float:
        """_GO, a time to wait until, or _WAIT (until something changes)."""
        if now < self._paused_until:
            return self._paused_until
        if self._sending >= self.parallel:
            return _WAIT
        if self._busy(now) + self._sending >= self.tasks.slots:
            return self._next_presumed(now)
        if retry:
            wait = self.budget.wait_for()
            if wait > 0:
                return now + wait
        opens = self.window.opens_at(now)
        if opens > now:
            probe = self._probe_at
            if probe is None or not self.window.learned or self._probing:
                return opens
            if now < probe:
                return min(opens, probe)
            self._probing = True   # a learned window may be wrong: one probe at a bounded cadence
            self._probe_early = opens - now
        return _GO

    def _take(self, retry: bool) -> None:
        self._sending += 1
        self.window.pending += 1
        if retry:
            self.budget.spend()

    def _wake_head(self) -> None:
        if self._queue:
            event = self._queue[0].event
            if event is not None:
                event.set()

    # -- what happened --------------------------------------------------------------------------

    def accepted(self, task_id: str) -> None:
        """The provider took the submit: one more task in flight."""
        now = self._now()
        self._give_back()
        self.window.record(now)
        level = self._busy(now)
        self.tasks.accepted(level, binding=level + self._sending + 1 >= self.tasks.slots)
        self._tasks.add(task_id)
        self._accepted_at[task_id] = now
        self.budget.earn()
        self._count_answer()
        if self._strikes:
            if self._cut_at is None and not self._rate_episode:
                self._sporadic += len(self._levels)   # each taken for overload, and it passed
            elif not self._rate_episode:   # refused at a level it is taken at now: not the cap
                self._sporadic += sum(1 for refused in self._levels if refused <= level)
            self._end_episode()
        if self._probing:
            self._probing = False
            self._probe_at = None
            self._probe_gap = self._probe_gap_min
            # The provider took more than the learned window allows; a probe taken a moment
            # before the opening says only that the provider's clock ran a little ahead.
            window = self.window
            if window.learned and self._probe_early > _PROBE_SLACK:
                if window.counts_refusals:   # a burst to relearn would cost a window: step up
                    window.learn(max(window.per_window or 1, window.count(now) + window.refused_count(now)))
                else:
                    window.forget()
        self._accept_level = level
        self._outage_since = None
        self._wake_head()   # its turn is free: the next submit may go

    def refused(self, retry_after: float | None = None) -> Refusal:
        """The provider answered 429: which kind it was taken for (and what follows from it)."""
        now = self._now()
        self._give_back()
        self._count_answer()
        level = self.in_flight
        self._strikes += 1
        self._levels.append(level)
        verdict = Refusal.OVERLOAD
        if self._strikes >= 2:   # one refusal alone is never a limit: sporadic ones are common
            chance = self._chance()
            if (level >= 1 and level >= self._accept_level and not self._rate_episode
                    and not self._window_full(now) and chance < _UNLIKELY_CAP):
                verdict = Refusal.TASK_CAP   # refused with as many out as were taken: the cap
            elif chance < _UNLIKELY_RATE:
                verdict = Refusal.RATE_WINDOW   # refused with fewer out than were taken: not the cap
        if verdict is Refusal.TASK_CAP:
            if self._limit_before is None:
                self._limit_before = self.tasks.value
            if self._cut_at is None or level < self._cut_at:
                self.tasks.cut(level)
                self._cut_at = level
        elif verdict is Refusal.RATE_WINDOW:
            self._rate_episode = True
            if self._limit_before is not None:   # a lower level was refused: not the cap after all
                self.tasks.restore(self._limit_before)
                self._limit_before = None
            self._learn_window(now)
            # Everyone waits: as long as the provider said; else the window holds submits until
            # its oldest entry ages out, and only when it would let them go (it is wrong, or
            # nothing was learned) do they wait one probe gap (growing to a bound).
            gap = self._probe_gap
            if retry_after is not None:
                self._paused_until = max(self._paused_until, now + retry_after)
            elif self.window.opens_at(now) <= now:
                # The next place frees when the oldest submit it holds (refused ones too) ages
                # out; wait for that, or one probe gap when it holds nothing that explains this.
                until = min(now + gap, max(self.window.next_free(now), now + _MIN_PAUSE))
                self._paused_until = max(self._paused_until, until)
            if self._probing or self._probe_at is None or self._probe_at <= now:
                self._back_off_probes(now)
        elif self._probing:
            self._back_off_probes(now)   # a refused probe waits its gap, whatever it was taken for
        self.window.record_refusal(now)
        self._probing = False
        self.refusals[verdict] += 1
        self._wake_head()
        return verdict

    def _back_off_probes(self, now: float) -> None:
        """The next probe of a learned window after a gap, doubling on each refused one."""
        gap = self._probe_gap
        self._probe_at = now + gap
        # A refused probe costs a place for a whole window where refusals count, and whether
        # they do is not known before the window has turned once: past the first few, probes
        # slow down to one every half window.
        bound = max(self._probe_gap_max, self.window.seconds / 2)
        self._probe_gap = min(bound, gap * 2)

    def _window_full(self, now: float) -> bool:
        """A known rate window is (about) full, counting refusals too: it explains a refusal
        better than the load does, so the limit on tasks in flight stays where it is."""
        window = self.window
        limit = window.per_window or window.known
        if limit is None:
            return False
        held = window.count(now) + window.refused_count(now) + window.pending
        return held >= limit - self.parallel

    def _learn_window(self, now: float) -> None:
        """A refusal taken for the rate window: what it says about the window's size.

        The size is learned from what was accepted in the last window. A refusal while the
        window as believed had room is either a smaller window or one that counts refusals
        too: when refusals are in the window it is first taken for the latter, and the size
        stands (lowering it would only slow every later window); once refusals are counted
        and it still had room, the size comes down to what it held.
        """
        window = self.window
        held = window.count(now)
        limit = window.per_window
        if limit is None:
            if held:
                window.learn(held)
                window.known = window.per_window
            return
        if window.opens_at(now) > now:
            return                       # the window as believed was full: nothing new
        if not window.counts_refusals and window.refused_count(now):
            window.counts_refusals = True   # the refusals it holds are what filled it
        elif held + window.pending < limit:
            window.learn(held + window.pending
                         + (window.refused_count(now) if window.counts_refusals else 0))
        window.known = window.per_window

    def released(self) -> None:
        """The submit got no verdict on the limits (not sent, another error): its place goes back."""
        self._give_back()
        self._probing = False
        self._wake_head()

    def ended(self, task_id: str) -> None:
        """A task in flight was seen finished (or given up on): its slot is free."""
        self._deferred.pop(task_id, None)
        self._eta_end.pop(task_id, None)
        accepted_at = self._accepted_at.pop(task_id, None)
        if task_id in self._tasks:
            self._tasks.discard(task_id)
            if accepted_at is not None:
                self._durations.append(self._now() - accepted_at)
                self._end_estimate = None
            self._wake_head()

    def expect(self, task_id: str, ends_by: float) -> None:
        """A poll said the task ends by ``ends_by`` (its eta, an upper bound)."""
        if task_id in self._tasks:
            self._eta_end[task_id] = ends_by

    def poll_deferred(self, task_id: str, seconds: float) -> None:
        """The provider refused a poll of the task: it is asked again in ``seconds``.

        If the task is expected to end before then, it is presumed finished from its expected
        end until the poll is answered, so its slot is not held idle for the provider's wait.
        """
        if task_id not in self._tasks:
            return
        now = self._now()
        ends = self._expected_end(task_id)
        if ends is None or ends >= now + seconds:
            return
        self._deferred[task_id] = max(now, ends)
        self._wake_head()

    def poll_answered(self, task_id: str) -> None:
        """A poll of the task was answered: it counts as what the answer said, not presumed."""
        if self._deferred.pop(task_id, None) is not None and task_id in self._tasks:
            self._wake_head()   # counted again: nothing more may go; a waiter re-reads the limits

    def adopt(self, task_id: str) -> None:
        """A task an earlier run left at the provider: it is in flight too."""
        self._tasks.add(task_id)

    def answered(self) -> None:
        """Some request got an answer: the provider is reachable."""
        self._outage_since = None

    def unreachable(self) -> None:
        """A request could not reach the provider (after it had answered before): an outage."""
        if self._outage_since is None:
            self._outage_since = self._now()

    def stop(self) -> None:
        """No more submits: every wait ends now."""
        self.stopped = True
        if self._stop_event is not None:
            self._stop_event.set()
        for waiter in self._queue:
            if waiter.event is not None:
                waiter.event.set()

    # -- reading ----------------------------------------------------------------------------------

    def snapshot(self) -> PaceSnapshot:
        now = self._now()
        paused = max(0.0, self._paused_until - now)
        if self._queue and self.window.per_window is not None:
            opens = self.window.opens_at(now)
            if now < opens < math.inf:
                paused = max(paused, opens - now)
        outage = None if self._outage_since is None else now - self._outage_since
        return PaceSnapshot(self.in_flight, self.tasks.slots, self.tasks.ceiling, paused,
                            self.window.per_window, self.window.learned, outage)

    def report(self) -> PaceReport:
        path = self.tasks.path
        if path:
            low, median, high = min(path), _median(path), max(path)
        else:
            low = median = high = self.tasks.slots
        return PaceReport(self.tasks.ceiling, low, median, high,
                          {kind.value: n for kind, n in self.refusals.items()},
                          self.window.per_window, self.window.learned, self.budget.spent)

    # -- helpers ------------------------------------------------------------------------------

    def _expected_end(self, task_id: str) -> float | None:
        """When the task has most likely finished at the provider, if anything says so."""
        ends = self._eta_end.get(task_id)
        accepted_at = self._accepted_at.get(task_id)
        if accepted_at is not None and len(self._durations) >= _END_SAMPLES:
            if self._end_estimate is None:
                ordered = sorted(self._durations)
                self._end_estimate = ordered[int(_END_QUANTILE * (len(ordered) - 1))]
            typical = accepted_at + self._end_estimate
            ends = typical if ends is None else min(ends, typical)
        return ends

    def _presumable(self) -> int:
        """How many tasks may be presumed finished now: none once submits are refused in a row
        (one refusal alone is common chance; a second may be the cap, so count everything)."""
        if self._strikes >= 2 or not self._deferred:
            return 0
        return int(self.tasks.slots * _PRESUMED_SHARE)

    def _busy(self, now: float) -> int:
        """Tasks in flight by the best evidence: those presumed finished left out."""
        most = self._presumable()
        if not most:
            return len(self._tasks)
        presumed = sum(1 for since in self._deferred.values() if since <= now)
        return len(self._tasks) - min(most, presumed)

    def _next_presumed(self, now: float) -> float:
        """When the next task is presumed finished (a slot may free then), else _WAIT."""
        if not self._presumable():
            return _WAIT
        later = [since for since in self._deferred.values() if since > now]
        return min(later) if later else _WAIT

    def _give_back(self) -> None:
        self._sending -= 1
        self.window.pending -= 1

    def _count_answer(self) -> None:
        self._answers += 1
        if self._answers > 2000:   # remember the recent past, not the whole run
            self._answers /= 2
            self._sporadic /= 2

    def _chance(self) -> float:
        """How likely this run of refusals is to be sporadic overload alone."""
        p = (self._sporadic + _PRIOR_SPORADIC) / (self._answers + _PRIOR_ANSWERS)
        return p ** self._strikes

    def _end_episode(self) -> None:
        self._strikes = 0
        self._levels.clear()
        self._limit_before = None
        self._cut_at = None
        self._rate_episode = False


def _median(counts: Counter[int]) -> int:
    half = sum(counts.values()) / 2
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= half:
            return value
    return max(counts)
