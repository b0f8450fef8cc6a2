"""Where a batch folder keeps its ledgers and locks: the names, and the lists of them.

A folder has its own ``ledger.jsonl`` and lock; a folder run in shards has one ledger and one
lock per shard under ``ledgers/``; a state folder holds an object store's copies under
``.store/``. Everything that looks for a folder's ledgers or locks asks here, so no two places
spell a name differently. Plain paths only: no reading, no locking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["LEDGERS_DIR", "LEDGER_FILE", "LOCK_FILE", "MIRROR_DIR", "ShardPart", "fetched_copies",
           "has_ledger", "ledger_files", "lock_files", "shard_stem"]

LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = ".batchgen.lock"
LEDGERS_DIR = "ledgers"  # one ledger and one lock per shard: shard-I-of-N.jsonl, .lock
MIRROR_DIR = ".store"    # in a state folder: an object store's copies of the ledgers


class ShardPart(Protocol):
    """The shard a ledger is written for (``batchgen.manifest.shards.Shard`` is one)."""

    index: int
    count: int

    def holds(self, job_id: str) -> bool: ...


def shard_stem(shard: ShardPart) -> str:
    """``shard-I-of-N``: the name of a shard's ledger, lock and temp folder."""
    return f"shard-{shard.index}-of-{shard.count}"


def ledger_files(folder: Path) -> list[Path]:
    """Every ledger of a batch folder: its own, then one per shard, in name order."""
    folder = Path(folder)
    found = [folder / LEDGER_FILE] if (folder / LEDGER_FILE).is_file() else []
    shards = folder / LEDGERS_DIR
    if shards.is_dir():
        found.extend(sorted(shards.glob("shard-*-of-*.jsonl")))
    return found


def fetched_copies(folder: Path) -> dict[str, Path]:
    """The object store's copies of a state folder's ledgers, as its last run fetched them
    (``.store/``), by their path in the folder."""
    base = Path(folder) / MIRROR_DIR
    if not base.is_dir():
        return {}
    return {path.relative_to(base).as_posix(): path for path in ledger_files(base)}


def has_ledger(folder: Path) -> bool:
    """True when the folder holds a batch's ledger (its own, a shard's, or an object store's
    copies fetched into it)."""
    return bool(ledger_files(folder)) or bool(fetched_copies(folder))


def lock_files(folder: Path) -> list[tuple[str | None, Path]]:
    """Every lock file of a batch folder: (None, the folder's own), then ("I/N", a shard's)."""
    folder = Path(folder)
    found: list[tuple[str | None, Path]] = [(None, folder / LOCK_FILE)]
    shards = folder / LEDGERS_DIR
    if shards.is_dir():
        for path in sorted(shards.glob("shard-*-of-*.lock")):
            parts = path.stem.split("-")
            if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
                found.append((f"{parts[1]}/{parts[3]}", path))
    return found

