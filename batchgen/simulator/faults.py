"""Seeded fault dice: which injected failure, if any, hits this request or this task.

Every decision is a pure function of (fault seed, kind of event, a stable identity of what it
hits, attempt number): a keyed BLAKE2b of the identity and attempt, cut into 32-bit uniforms.
There is no shared stream, so the same seed replays the same faults for the same requests
*whatever order they arrive in* (a concurrent client interleaves them differently every run).
The caller picks the identity (a digest of the submit body, a task's body digest and ordinal)
and the attempt (how many times that body was submitted, that task polled, ...). Each fault
reads the uniform at its own position, so turning one fault on does not move where the others
land. Never sleeps, never does I/O.
"""

from __future__ import annotations

import hashlib
import math
import struct

from batchgen.simulator.config import SimConfig

__all__ = ["DOWNLOAD_FAULTS", "FaultDice", "Roll", "POLL_FAULTS", "SUBMIT_FAULTS", "TASK_FAULTS"]

# What can hit each kind of event, in precedence order (the first that fires wins where
# two cannot both happen, e.g. a dropped connection hides a 500).
SUBMIT_FAULTS = ("fault_drop", "fault_503", "fault_500", "fault_429", "fault_not_json", "fault_no_task_id")
TASK_FAULTS = ("fault_stuck", "fault_task_failed")
POLL_FAULTS = ("fault_drop", "fault_503", "fault_500", "fault_not_json", "fault_unknown_status",
               "fault_expire", "fault_bad_base64", "fault_bad_image", "fault_429_poll")
DOWNLOAD_FAULTS = ("fault_redirect", "fault_huge_image", "fault_bad_image", "fault_truncate")

_SCALE = 1.0 / 4294967296.0           # 2**-32: a 32-bit word to a uniform in [0, 1)
_HALF = 1 << 31
_ATTEMPT = struct.Struct(">Q").pack
_UNPACK = {n: struct.Struct(f">{n}I").unpack for n in range(1, 17)}   # BLAKE2b gives <= 64 bytes


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


_NOTHING = Roll((), False)   # the coin is only read when a fault fired


class FaultDice:
    """Stateless seeded draws: ``words(kind, identity, attempt, n)`` is n 32-bit words that
    depend on nothing else, so rolls need no lock and replay under any interleaving.

    ``kind`` (<= 16 bytes) separates streams that share an identity (a task's poll faults and
    its download faults). The seed is re-read on every draw, like every other config field.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._seed: int | None = None
        self._key = b""

    def _key_for_seed(self) -> bytes:
        seed = self.config.fault_seed
        if seed != self._seed:
            self._key = hashlib.blake2b(f"batchgen-simulator-faults:{seed}".encode(), digest_size=32).digest()
            self._seed = seed
        return self._key

    def words(self, kind: bytes, identity: bytes, attempt: int, n: int) -> tuple[int, ...]:
        digest = hashlib.blake2b(identity + _ATTEMPT(attempt), key=self._key_for_seed(), person=kind,
                                 digest_size=4 * n).digest()
        return _UNPACK[n](digest)

    def roll(self, names: tuple[str, ...], kind: bytes, identity: bytes, attempt: int) -> Roll:
        """Which of ``names`` fire (each at its config rate), in precedence order, and a coin."""
        cfg = self.config
        rates = [getattr(cfg, name) for name in names]
        if not any(rates):          # the common healthy case costs no hash
            return _NOTHING
        words = self.words(kind, identity, attempt, len(names) + 1)
        fired = tuple(name for name, rate, word in zip(names, rates, words) if word * _SCALE < rate)
        return Roll(fired, words[-1] < _HALF) if fired else _NOTHING

    def uniform(self, kind: bytes, identity: bytes, attempt: int) -> float:
        """One uniform in [0, 1) (53 bits), for a choice that is not a fault (a style, a seed)."""
        high, low = self.words(kind, identity, attempt, 2)
        return ((high << 21) ^ (low >> 11)) * (1.0 / 9007199254740992.0)

    def gauss(self, kind: bytes, identity: bytes, attempt: int, mu: float, sigma: float) -> float:
        """A normal variate (Box-Muller over two words; |z| stays below ~6.7)."""
        a, b = self.words(kind, identity, attempt, 2)
        radius = math.sqrt(-2.0 * math.log((a + 0.5) * _SCALE))
        return mu + sigma * radius * math.cos(2.0 * math.pi * b * _SCALE)
