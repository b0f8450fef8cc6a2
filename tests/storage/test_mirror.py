"""The ledger's copies in an object store (a real S3 API server): append-only generations,
whole lines only, the newest whole generation read back, older ones removed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from batchgen.storage.ledger import fetched_copies
from batchgen.storage.mirror import COPIES, LedgerMirror, state_folder
from cluster.s3server import S3Server


def keys(s3_server: S3Server, url: str) -> list[str]:
    root = url.removeprefix("s3://")
    return sorted(p[len(root) + 1:] for p in s3_server.filesystem().find(root))


def test_pushes_send_only_new_whole_lines_and_fetch_puts_them_back_together(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(b'{"a":1}\n{"a":2}\n')
    mirror = LedgerMirror(s3_url)
    assert mirror.push(ledger, "ledger.jsonl")
    with open(ledger, "ab") as fh:
        fh.write(b'{"a":3}\n{"a":')                      # a line being written: not sent yet
    assert mirror.push(ledger, "ledger.jsonl")
    assert mirror.push(ledger, "ledger.jsonl")           # nothing new: no object
    names = keys(s3_server, s3_url)
    assert [n.rsplit("/", 1)[1] for n in names] == ["000000.jsonl", "000001.jsonl"]
    fetched = LedgerMirror(s3_url).fetch(tmp_path / "other")
    assert fetched["ledger.jsonl"].read_bytes() == b'{"a":1}\n{"a":2}\n{"a":3}\n'


def test_a_rewritten_ledger_starts_a_new_generation_and_the_old_one_goes(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledgers" / "shard-1-of-4.jsonl"
    ledger.parent.mkdir()
    ledger.write_bytes(b'{"old":1}\n')
    mirror = LedgerMirror(s3_url)
    mirror.push(ledger, "ledgers/shard-1-of-4.jsonl")
    first = {n.split("/")[3] for n in keys(s3_server, s3_url)}
    compacted = tmp_path / "new.jsonl"
    compacted.write_bytes(b'{"compacted":1}\n')
    os.replace(compacted, ledger)                           # what a compaction does
    mirror.push(ledger, "ledgers/shard-1-of-4.jsonl")
    second = {n.split("/")[3] for n in keys(s3_server, s3_url)}
    assert len(first) == len(second) == 1 and first != second
    fetched = LedgerMirror(s3_url).fetch(tmp_path / "other")
    assert fetched["ledgers/shard-1-of-4.jsonl"].read_bytes() == b'{"compacted":1}\n'


def test_only_a_whole_generation_counts_and_parts_stop_at_a_gap(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    fs = s3_server.filesystem()
    root = f"{s3_url.removeprefix('s3://')}/{COPIES}/ledger.jsonl"
    fs.pipe_file(f"{root}/00000000000000000001-1/000000.jsonl", b"base\n")
    fs.pipe_file(f"{root}/00000000000000000001-1/000001.jsonl", b"one\n")
    fs.pipe_file(f"{root}/00000000000000000001-1/000003.jsonl", b"after a gap\n")
    fs.pipe_file(f"{root}/00000000000000000002-1/000001.jsonl", b"no base\n")  # newer, unfinished
    fetched = LedgerMirror(s3_url).fetch(tmp_path)
    assert fetched["ledger.jsonl"].read_bytes() == b"base\none\n"


def test_parts_that_outgrow_the_base_start_a_new_generation(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(b"x\n")
    mirror = LedgerMirror(s3_url)
    mirror.push(ledger, "ledger.jsonl")
    for n in range(3):
        with open(ledger, "ab") as fh:
            fh.write(b"more lines\n")
        mirror.push(ledger, "ledger.jsonl")
    generations = {n.split("/")[2] for n in keys(s3_server, s3_url)}
    assert len(generations) == 1                            # the old one was removed
    assert LedgerMirror(s3_url).fetch(tmp_path / "o")["ledger.jsonl"].read_bytes() == ledger.read_bytes()


def test_the_state_folder_is_one_per_url_under_xdg_state_home(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    a = state_folder("s3://bucket/a", env)
    assert a == state_folder("s3://bucket/a/", env) and a != state_folder("s3://bucket/b", env)
    assert a.parent == tmp_path / "batchgen" and a.name.startswith("bucket_a-")


@pytest.mark.slow
def test_a_fetch_replaces_each_copy_whole_and_removes_only_copies_the_store_no_longer_has(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    # Shards on one machine share a state folder, and each fetches while the others read it.
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(b'{"a":1}\n' * 1000)
    LedgerMirror(s3_url).push(ledger, "ledger.jsonl")
    state = tmp_path / "state"
    LedgerMirror(s3_url).fetch(state)
    gone = state / ".store" / "ledgers" / "shard-3-of-4.jsonl"
    gone.parent.mkdir()
    gone.write_bytes(b"a ledger the store no longer has\n")
    fetcher = threading.Thread(target=lambda: [LedgerMirror(s3_url).fetch(state) for _ in range(5)])
    fetcher.start()
    seen = 0
    while fetcher.is_alive() or not seen:
        copies = fetched_copies(state)   # what a shard's ledger reads meanwhile
        assert copies["ledger.jsonl"].read_bytes() == ledger.read_bytes()
        seen += 1
    fetcher.join()
    assert not gone.exists()
    assert sorted(p.name for p in (state / ".store").rglob("*") if p.is_file()) == ["ledger.jsonl"]
