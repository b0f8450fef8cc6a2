"""The simulated provider's memory: task table, clock-driven task states, limits, balance, stats.

Nothing runs in the background: a task's state is computed from ``clock()`` whenever someone
asks, so tests can drive time by hand (or run it virtually, e.g. ``clock=anyio.current_time``
under trio's MockClock); no decision reads the wall clock. Everything random about a task
(faults, duration, the seed for ``seed: -1``) is drawn from the fault dice keyed by the
digest of its submit body and its ordinal among tasks of that body, so a run replays whatever
order the requests arrive in. Task ids and URL-signing keys are random per instance instead, so
a restarted simulator never hands out an id or URL that an earlier one did. Per-task data stays
small (the soak makes 10^4+ tasks) and image URLs are signed tokens, so issuing them stores nothing.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import math
import os
import struct
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from batchgen.simulator.config import SimConfig
from batchgen.simulator.faults import TASK_FAULTS, FaultDice
from batchgen.simulator.images import ImageCache, Recipe

__all__ = ["QUEUED", "PROCESSING", "SUCCEED", "FAILED", "UNKNOWN",
           "Rejection", "SimState", "SimStats", "Task"]

QUEUED = "TASK_STATUS_QUEUED"
PROCESSING = "TASK_STATUS_PROCESSING"
SUCCEED = "TASK_STATUS_SUCCEED"
FAILED = "TASK_STATUS_FAILED"
UNKNOWN = "TASK_STATUS_UNKNOWN"

FAILURE_REASON = "generation failed: model worker crashed"
_RPM_WINDOW = 60.0
_MIN_TASK_SECONDS = 0.05
_ORDINAL = struct.Struct(">Q").pack


@dataclass
class SimStats:
    """Counters of everything the simulator saw; a plain dataclass, read it any time.

    Counters keyed by outcome use ``"ok"`` for success and the provider's reason otherwise.
    """

    api_requests: int = 0
    image_requests: int = 0
    submits: int = 0
    submits_by_outcome: Counter[str] = field(default_factory=Counter)
    tasks_created: int = 0
    #: created and charged, but the client was never told the id (drop after create, 200 {})
    tasks_created_but_dropped: int = 0
    polls: int = 0
    polls_by_task: Counter[str] = field(default_factory=Counter)
    polls_by_status: Counter[str] = field(default_factory=Counter)
    downloads: int = 0
    downloads_by_outcome: Counter[str] = field(default_factory=Counter)
    #: requests to an image URL (either host) that carried any Authorization header
    image_requests_with_auth: int = 0
    #: requests carrying the API key anywhere but the API endpoints' Authorization header
    key_leaks: int = 0
    key_leak_places: Counter[str] = field(default_factory=Counter)
    errors_by_reason: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    max_in_flight_seen: int = 0
    #: sum of the processing seconds of every created task (queueing excluded)
    task_seconds_total: float = 0.0

    def polls_per_task(self) -> float:
        """Mean polls per task that was polled at all."""
        return sum(self.polls_by_task.values()) / len(self.polls_by_task) if self.polls_by_task else 0.0


class Rejection(Exception):
    """The provider refuses a request: becomes an error answer with this status and reason."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class Task:
    """One task at the provider: its timeline is fixed at submit time.

    ``key`` is its stable identity for the fault dice (submit-body digest + ordinal among tasks
    of that body), never the random ``task_id``; ``polls`` / ``downloads`` count the requests
    seen for it, the attempt numbers of its poll and download rolls.
    """

    __slots__ = ("seq", "task_id", "recipe", "seed", "img2img", "base64", "submitted",
                 "start", "end", "failed", "stuck", "key", "polls", "downloads")

    def __init__(self, seq: int, task_id: str, recipe: Recipe, seed: int, img2img: bool,
                 base64: bool, submitted: float, start: float, end: float, failed: bool,
                 stuck: bool, key: bytes = b"") -> None:
        self.seq = seq
        self.task_id = task_id
        self.recipe = recipe
        self.seed = seed
        self.img2img = img2img
        self.base64 = base64
        self.submitted = submitted
        self.start = start
        self.end = end            # math.inf when stuck
        self.failed = failed
        self.stuck = stuck
        self.key = key
        self.polls = 0
        self.downloads = 0

    def status(self, now: float) -> str:
        if self.stuck or now < self.start:
            return QUEUED
        if now < self.end:
            return PROCESSING
        return FAILED if self.failed else SUCCEED

    def hints(self, now: float) -> tuple[int, int]:
        """(eta in whole seconds rounded up, progress percent) at ``now``."""
        if self.stuck:  # a constant, hopeful, wrong estimate
            return max(1, math.ceil(self.start - self.submitted)), 0
        if now >= self.end:
            return 0, 0
        eta = max(1, math.ceil(self.end - now))
        if now < self.start:
            return eta, 0
        return eta, int(100 * (now - self.start) / (self.end - self.start))


class SimState:
    """Tasks, limits and balance of one simulated account, all behind one lock.

    The apps hold ``lock`` for the whole of each request and never await inside it, so it is
    never held across a checkpoint and works the same under asyncio and trio; other threads
    (a test topping up ``balance``) take it too.
    """

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.stats = SimStats()
        self.dice = FaultDice(config)
        self.images = ImageCache(config.image_cache_size)
        self.tasks: dict[str, Task] = {}
        self._by_seq: list[Task] = []
        # Random per instance, never derived from the fault seed: a restarted simulator must
        # not accept an earlier instance's image URLs (they would name another task's image).
        self._mac_key = os.urandom(16)
        self._seq = 0
        self._nonce = 0
        # Attempt numbers for the fault dice: submits per body digest, tasks per body digest,
        # polls per task id nobody was given.
        self._submits_by_body: dict[bytes, int] = {}
        self._tasks_by_body: dict[bytes, int] = {}
        self._stray_polls: Counter[str] = Counter()
        self._workers: list[float] = []     # heap: when each busy worker frees up
        self._in_flight: list[float] = []   # heap: end times of unfinished tasks
        self._recent: deque[float] = deque()  # submits the rpm window holds
        self._balance = config.balance
        # Wall-clock anchor for debug_info's ms timestamps: they follow the injected clock (which
        # may be fake or virtual) from a fixed offset. A clock that needs a running event loop
        # (anyio.current_time) cannot be read outside one: then anchor at first use.
        self._wall0 = time.time()
        try:
            self._clock0: float | None = clock()
        except RuntimeError:
            self._clock0 = None

    # --- balance -------------------------------------------------------------------------
    @property
    def balance(self) -> int | None:
        return self._balance

    @balance.setter
    def balance(self, value: int | None) -> None:
        with self.lock:
            self._balance = value

    # --- fault dice attempt numbers ------------------------------------------------------
    def submit_attempt(self, identity: bytes) -> int:
        """How many times a body with this digest was submitted before (and count this one)."""
        attempt = self._submits_by_body.get(identity, 0)
        self._submits_by_body[identity] = attempt + 1
        return attempt

    def poll_attempt(self, task_id: str) -> tuple[bytes, bytes, int]:
        """(dice kind, identity, attempt) for a poll of ``task_id``: the task's stable key and
        its poll count, or, for an id this simulator never issued, the id itself."""
        task = self.tasks.get(task_id)
        if task is not None:
            attempt = task.polls
            task.polls = attempt + 1
            return b"poll", task.key, attempt
        attempt = self._stray_polls[task_id]
        self._stray_polls[task_id] = attempt + 1
        return b"poll-unknown", task_id.encode("utf-8", "surrogatepass"), attempt

    # --- submit ----------------------------------------------------------------------------
    def in_flight(self, now: float) -> int:
        heap = self._in_flight
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        return len(heap)

    def check_admission(self, now: float) -> None:
        """Raise the Rejection a submit at ``now`` meets (balance, in-flight cap, rpm)."""
        cfg = self.config
        if self._balance is not None and self._balance <= 0:
            if cfg.balance_style == "billing":
                raise Rejection(400, "BILLING_BALANCE_NOT_ENOUGH", "billing balance not enough")
            raise Rejection(403, "NOT_ENOUGH_BALANCE", "not enough balance")
        if cfg.max_in_flight is not None and self.in_flight(now) >= cfg.max_in_flight:
            wait = self._in_flight[0] - now if self._in_flight else 1.0
            raise Rejection(429, "RATE_LIMIT_EXCEEDED",
                            f"too many tasks in progress (limit {cfg.max_in_flight})",
                            retry_after=min(wait, 60.0))
        if cfg.rpm is not None:
            self._check_rate(now)

    def _check_rate(self, now: float) -> None:
        """The rpm window: sliding (the last 60 s) or fixed (this clock minute), counting the
        submits it accepted or every one it saw (then a refusal takes a place too)."""
        cfg = self.config
        recent = self._recent
        if cfg.rpm_window == "fixed":
            start = math.floor(now / _RPM_WINDOW) * _RPM_WINDOW
            while recent and recent[0] < start:
                recent.popleft()
            opens = start + _RPM_WINDOW
        else:
            while recent and recent[0] <= now - _RPM_WINDOW:
                recent.popleft()
            opens = recent[0] + _RPM_WINDOW if recent else now + _RPM_WINDOW
        full = len(recent) >= cfg.rpm
        if cfg.rpm_counts == "all":
            recent.append(now)
        if full:
            raise Rejection(429, "RATE_LIMIT_EXCEEDED",
                            f"rate limit exceeded ({cfg.rpm} requests per minute)", retry_after=opens - now)

    def create_task(self, now: float, scene: int, width: int, height: int, fmt: str,
                    loras: tuple[tuple[int, float], ...], seed: int, img2img: bool,
                    base64_output: bool, identity: bytes | None = None, *, prompt: str = "",
                    lora_names: tuple[str, ...] = ()) -> Task:
        """Admit (or raise Rejection) and create a task; its whole timeline is decided here.

        ``identity`` is the digest of the submit body (default: of these arguments); the task's
        faults, duration and drawn seed depend on it and on how many tasks of that body came
        before, not on what else was submitted in between.
        """
        self.check_admission(now)
        cfg = self.config
        if identity is None:
            identity = hashlib.blake2b(repr((scene, width, height, fmt, loras, seed, img2img,
                                             base64_output)).encode(), digest_size=16).digest()
        ordinal = self._tasks_by_body.get(identity, 0)
        self._tasks_by_body[identity] = ordinal + 1
        seq = self._seq
        self._seq += 1
        task_id = self._new_task_id()
        dice = self.dice
        if seed == -1:
            seed = int(dice.uniform(b"seed", identity, ordinal) * 2147483648)
        roll = dice.roll(TASK_FAULTS, b"task", identity, ordinal)
        stuck = "fault_stuck" in roll
        failed = not stuck and "fault_task_failed" in roll
        duration = self._draw_duration(identity, ordinal)
        if stuck:
            start, end = now + duration, math.inf   # never takes a worker, never ends
            self.stats.faults["fault_stuck"] += 1
        else:
            start = self._take_worker(now, duration)
            end = start + duration
            if failed:
                self.stats.faults["fault_task_failed"] += 1
        scene = int.from_bytes(hashlib.blake2b(struct.pack(">QQ", scene, seed), digest_size=8).digest())
        recipe = Recipe(scene, width, height, fmt, loras, prompt, seed, lora_names)
        task = Task(seq, task_id, recipe, seed, img2img, base64_output, now, start, end, failed, stuck,
                    identity + _ORDINAL(ordinal))
        self.tasks[task_id] = task
        self._by_seq.append(task)
        if end > now:
            heapq.heappush(self._in_flight, end)
        if self._balance is not None:
            self._balance -= 1
        if cfg.rpm is not None and cfg.rpm_counts == "accepted":
            self._recent.append(now)
        st = self.stats
        st.tasks_created += 1
        st.task_seconds_total += duration
        st.max_in_flight_seen = max(st.max_in_flight_seen, self.in_flight(now))
        return task

    def _new_task_id(self) -> str:
        """A random uuid4, unique in this instance. Random, not seeded: two simulators with one
        fault seed (a served one restarted) must never reuse an id, or a resumed batch could
        collect another batch's task."""
        while True:
            task_id = str(uuid.uuid4())
            if task_id not in self.tasks:
                return task_id

    def _draw_duration(self, identity: bytes, ordinal: int) -> float:
        cfg = self.config
        mean = cfg.task_seconds
        if mean <= 0:
            return 0.0
        # A mean below the floor is honoured as given (a test asking for 10 ms means it).
        floor = min(_MIN_TASK_SECONDS, mean)
        if cfg.task_jitter <= 0:
            return max(floor, mean)
        return max(floor, self.dice.gauss(b"duration", identity, ordinal, mean, cfg.task_jitter))

    def _take_worker(self, now: float, duration: float) -> float:
        """FIFO: the task starts when the earliest worker frees (now, if one is idle)."""
        heap = self._workers
        if heap and heap[0] <= now:
            heapq.heapreplace(heap, now + duration)
            return now
        if len(heap) < self.config.workers:
            heapq.heappush(heap, now + duration)
            return now
        start = heap[0]
        heapq.heapreplace(heap, start + duration)
        return start

    # --- results ---------------------------------------------------------------------------
    def lookup(self, task_id: str, now: float) -> Task | None:
        """The task, or None when unknown or past ``result_ttl``."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        ttl = self.config.result_ttl
        if ttl is not None and now >= task.end + ttl:
            return None
        return task

    def wall_ms(self, t: float) -> str:
        """Unix milliseconds for clock time ``t``: the clock plus the fixed offset anchored above."""
        clock0 = self._clock0
        if clock0 is None:
            clock0 = self._clock0 = self.clock()
            self._wall0 = time.time()
        return str(int((self._wall0 + (t - clock0)) * 1000))

    # --- image URLs: stateless signed tokens, like pre-signed S3 URLs ---------------------
    _TOKEN = struct.Struct(">QdI")

    def issue_token(self, task: Task, expires: float) -> str:
        # The nonce only makes a re-issued URL differ from the last one; the key is secret.
        self._nonce = (self._nonce + 1) & 0xFFFFFFFF
        payload = self._TOKEN.pack(task.seq, expires, self._nonce)
        mac = hashlib.blake2b(payload, key=self._mac_key, digest_size=8).digest()
        return base64.urlsafe_b64encode(mac + payload).rstrip(b"=").decode()

    def read_token(self, token: str) -> tuple[Task, float] | None:
        """(task, expiry) for a token this simulator instance issued, else None."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        if len(raw) != self._TOKEN.size + 8:
            return None
        mac, payload = raw[:8], raw[8:]
        if hashlib.blake2b(payload, key=self._mac_key, digest_size=8).digest() != mac:
            return None
        seq, expires, _ = self._TOKEN.unpack(payload)
        by_seq = self._by_seq
        return (by_seq[seq], expires) if seq < len(by_seq) else None
