"""The simulated provider's memory: task table, clock-driven task states, limits, balance, stats.

Nothing runs in the background: a task's state is computed from ``clock()`` whenever someone
asks, so tests can drive time by hand. Per-task data stays small (the soak makes 10^4+ tasks)
and image URLs are signed tokens, so issuing them stores nothing.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import math
import random
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
    """One task at the provider: its timeline is fixed at submit time."""

    __slots__ = ("seq", "task_id", "recipe", "seed", "img2img", "base64", "submitted",
                 "start", "end", "failed", "stuck")

    def __init__(self, seq: int, task_id: str, recipe: Recipe, seed: int, img2img: bool,
                 base64: bool, submitted: float, start: float, end: float, failed: bool,
                 stuck: bool) -> None:
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

    The apps hold ``lock`` for the whole of each request (they never await inside it); other
    threads (a test topping up ``balance``) take it too.
    """

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.stats = SimStats()
        self.dice = FaultDice(config)
        self.images = ImageCache(config.image_cache_size)
        self.tasks: dict[str, Task] = {}
        # Everything random that is not a fault (durations, tokens, styles) has its own
        # stream, so turning a fault on does not change the timings.
        self.rng = random.Random(f"batchgen-simulator:{config.fault_seed}")
        self._mac_key = hashlib.blake2b(f"url-signing:{config.fault_seed}".encode(), digest_size=16).digest()
        self._seq = 0
        self._nonce = 0
        self._workers: list[float] = []     # heap: when each busy worker frees up
        self._in_flight: list[float] = []   # heap: end times of unfinished tasks
        self._recent: deque[float] = deque()  # accepted submits in the last 60 s
        self._balance = config.balance
        # Wall-clock anchor for debug_info's ms timestamps (the clock may be fake).
        self._wall0 = time.time()
        self._clock0 = clock()

    # --- balance -------------------------------------------------------------------------
    @property
    def balance(self) -> int | None:
        return self._balance

    @balance.setter
    def balance(self, value: int | None) -> None:
        with self.lock:
            self._balance = value

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
            recent = self._recent
            while recent and recent[0] <= now - _RPM_WINDOW:
                recent.popleft()
            if len(recent) >= cfg.rpm:
                wait = recent[0] + _RPM_WINDOW - now if recent else _RPM_WINDOW
                raise Rejection(429, "RATE_LIMIT_EXCEEDED",
                                f"rate limit exceeded ({cfg.rpm} requests per minute)", retry_after=wait)

    def create_task(self, now: float, scene: int, width: int, height: int, fmt: str,
                    loras: tuple[tuple[int, float], ...], seed: int, img2img: bool,
                    base64_output: bool) -> Task:
        """Admit (or raise Rejection) and create a task; its whole timeline is decided here."""
        self.check_admission(now)
        cfg = self.config
        seq = self._seq
        self._seq += 1
        task_id = self.task_id_for(seq)
        if seed == -1:
            seed = int.from_bytes(hashlib.blake2b(f"seed:{cfg.fault_seed}:{seq}".encode(),
                                                  digest_size=8).digest()) % 2147483648
        roll = self.dice.roll(TASK_FAULTS)
        stuck = "fault_stuck" in roll
        failed = not stuck and "fault_task_failed" in roll
        duration = self._draw_duration()
        if stuck:
            start, end = now + duration, math.inf   # never takes a worker, never ends
            self.stats.faults["fault_stuck"] += 1
        else:
            start = self._take_worker(now, duration)
            end = start + duration
            if failed:
                self.stats.faults["fault_task_failed"] += 1
        scene = int.from_bytes(hashlib.blake2b(struct.pack(">QQ", scene, seed), digest_size=8).digest())
        recipe = Recipe(scene, width, height, fmt, loras)
        task = Task(seq, task_id, recipe, seed, img2img, base64_output, now, start, end, failed, stuck)
        self.tasks[task_id] = task
        if end > now:
            heapq.heappush(self._in_flight, end)
        if self._balance is not None:
            self._balance -= 1
        if cfg.rpm is not None:
            self._recent.append(now)
        st = self.stats
        st.tasks_created += 1
        st.task_seconds_total += duration
        st.max_in_flight_seen = max(st.max_in_flight_seen, self.in_flight(now))
        return task

    def task_id_for(self, seq: int) -> str:
        digest = hashlib.blake2b(f"task:{self.config.fault_seed}:{seq}".encode(), digest_size=16).digest()
        return str(uuid.UUID(bytes=digest, version=4))

    def _draw_duration(self) -> float:
        mean = self.config.task_seconds
        if mean <= 0:
            return 0.0
        # A mean below the floor is honoured as given (a test asking for 10 ms means it).
        return max(min(_MIN_TASK_SECONDS, mean), self.rng.gauss(mean, self.config.task_jitter))

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
        return str(int((self._wall0 + (t - self._clock0)) * 1000))

    # --- image URLs: stateless signed tokens, like pre-signed S3 URLs ---------------------
    _TOKEN = struct.Struct(">QdI")

    def issue_token(self, task: Task, expires: float) -> str:
        self._nonce = (self._nonce + 1) & 0xFFFFFFFF
        payload = self._TOKEN.pack(task.seq, expires, self._nonce ^ self.rng.getrandbits(32))
        mac = hashlib.blake2b(payload, key=self._mac_key, digest_size=8).digest()
        return base64.urlsafe_b64encode(mac + payload).rstrip(b"=").decode()

    def read_token(self, token: str) -> tuple[Task, float] | None:
        """(task, expiry) for a token this simulator issued, else None."""
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
        task = self.tasks.get(self.task_id_for(seq))
        return (task, expires) if task is not None else None
