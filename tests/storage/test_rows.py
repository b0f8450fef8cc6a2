"""The packed table of records and the block lines of a compacted ledger (storage/rows.py).

A block line must replay exactly as the one-line-per-job compacted lines of its rows would,
on any values (hostile ones included), whether its rows are packed at once, one by one, or
folded as records; and a compaction must give back every record as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.job import Failed, Failure, Job
from batchgen.storage.ledger import Ledger
from batchgen.storage.rows import BLOCK_ROWS, ROWS_KEY, PackedRecord, Records, block_lines, key_of
from replaykit import view

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADER = {"batchgen_ledger": 1, "batch": "rows", "created_at": 1.0, "version": "0"}
IDS = [hashlib.sha256(bytes([n])).hexdigest()[:16] for n in range(6)] + ["job-a"]
COLUMNS = ("state", "at", "task_id", "file", "bytes", "sidecar_bytes", "sha256", "gone", "info")

#: values each field of a row may take besides a good one: near misses of every packing rule
ODD = {
    "job": ["job-a", "ABCDEF0123456789", "0123456789abcde", "0123 4567 89abcd", 5, None],
    "state": ["failed", "submitted", "pending", "weird", None, 5],
    "at": [5, True, "1", None, 0.0, 1e300, -2.5],
    "task_id": ["t-1", "A" * 36, str(uuid.UUID(int=7)).upper(), uuid.UUID(int=7).hex, "x" * 300, 5, ""],
    "file": ["../x.png", "/abs.png", "a//b.png", "a\\b.png", "", ".", "a/./b", "x" * 1100, 7,
             "images/é/ü.png", "images/a.png/", ".hidden/a.png"],
    "bytes": [-1, True, 1.5, "3", 2**64 - 1, 0],
    "sidecar_bytes": [-1, False, 2**32, 2.0, 0],
    "sha256": ["AB" * 32, "00" * 30 + "  00", "zz" * 32, "ab", 5],
    "gone": [1, 0, True, "x"],
    "info": ["0123456789ABCDEF", "0123", "", {"derived": "0123456789abcdef"}, {"reason": "r", "code": "TIMEOUT"},
             {"spec": {"request": {"prompt": "p"}}}, {}, [1], 5],
}


def good_row(n: int, job: str) -> dict:
    """A done job as a compaction of a finished batch writes it."""
    return {"job": job, "state": "done", "at": 1000.0 + n, "task_id": str(uuid.UUID(int=n * 7919 + 1)),
            "file": f"images/{job[:3]}/{job}.webp", "bytes": 1000 + n, "sidecar_bytes": 50 + n,
            "sha256": hashlib.sha256(job.encode()).hexdigest(), "gone": None,
            "info": hashlib.sha256(str(n).encode()).hexdigest()[:16]}


@st.composite
def rows(draw) -> list[dict]:
    """Rows of a block: all good done jobs of distinct ids (packed at once), or good done
    jobs of ids that may repeat, any of them with a field or two odd (row by row)."""
    if draw(st.integers(0, 2)) == 0:
        return [good_row(n, job) for n, job in enumerate(draw(st.permutations(IDS[:6])))]
    out = []
    for n in range(draw(st.integers(0, 12))):
        row = good_row(n, draw(st.sampled_from(IDS)))
        if draw(st.integers(0, 2)) == 0:
            for _ in range(draw(st.integers(1, 2))):
                key = draw(st.sampled_from(sorted(ODD)))
                row[key] = draw(st.sampled_from(ODD[key]))
        out.append(row)
    return out


def block_line(part: list[dict]) -> bytes:
    line = {ROWS_KEY: 1, "job": [row["job"] for row in part]}
    for column in COLUMNS:
        line[column] = [row.get(column) for row in part]
    return json.dumps(line).encode()


def row_line(row: dict) -> bytes:
    """The compacted line a row stands for: its fields that are not null, the digest alone
    (an ``info`` that is text) as ``{"derived": ...}``."""
    event = {"job": row["job"], "compact": 1}
    for key in COLUMNS:
        value = row.get(key)
        if value is not None:
            event[key] = {"derived": value} if key == "info" and isinstance(value, str) else value
    return json.dumps(event).encode()


def read(tmp_path: Path, name: str, lines: list[bytes]) -> Ledger:
    folder = tmp_path / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "ledger.jsonl").write_bytes(b"\n".join([orjson.dumps(HEADER), *lines]) + b"\n")
    return Ledger.read(folder)


def seen(ledger: Ledger) -> dict:
    """Everything a replay leaves, less the count of lines (a block is one line)."""
    got = view(ledger)
    got["stats"] = got["stats"][1:]
    return got


@SETTINGS
@given(st.lists(rows(), min_size=1, max_size=3), st.sampled_from([None, 0, 1]))
def test_a_block_replays_as_the_lines_of_its_rows(tmp_path: Path, blocks: list[list[dict]],
                                                  between: int | None) -> None:
    """Any rows, in blocks, with an ordinary event before or between them: the same records
    (every field, in order), unreadable rows, times and counts as one line per row."""
    event = json.dumps({"job": IDS[0], "state": "submitted", "at": 500.0, "task_id": "t-9"}).encode()
    as_blocks, as_lines = [], []
    for n, part in enumerate(blocks):
        if between == n:
            as_blocks.append(event)
            as_lines.append(event)
        as_blocks.append(block_line(part))
        as_lines.extend(row_line(row) for row in part)
    assert seen(read(tmp_path, "blocks", as_blocks)) == seen(read(tmp_path, "lines", as_lines))


def test_a_finished_batch_compacts_to_blocks_held_packed_and_reads_back_the_same(tmp_path: Path) -> None:
    n = 2 * BLOCK_ROWS + 5
    ledger = Ledger.open(tmp_path, "rows")
    for i in range(n):
        row = good_row(i, hashlib.sha256(i.to_bytes(4, "big")).hexdigest()[:16])
        job = Job(job_id=row["job"], index=i, request={"prompt": "p", "seed": i}, axes={"seed": i}, replica=0, name=row["job"])
        ledger.submitting(job)
        ledger.submitted(row["job"], row["task_id"])
        ledger.done(row["job"], row["file"], row["bytes"], row["sha256"], row["sidecar_bytes"],
                    derived=row["info"])
    ledger.failed(row["job"], Failed(Failure.TASK_FAILED, "boom"), task_id=row["task_id"])
    before = seen(ledger)
    ledger.compact()
    ledger.close()
    lines = (tmp_path / "ledger.jsonl").read_bytes().splitlines()
    assert len(lines) == 1 + 3  # the header and three blocks
    again = Ledger.read(tmp_path)
    assert again.records.packed() == n - 1  # every done job; the failed one is a record
    got = seen(again)
    assert got["records"] == before["records"] and got["order"] == before["order"]
    assert (again.stats.tasks_created, again.floor) == (n, ledger.floor)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(IDS[:4]), st.sampled_from(["done", "failed", "submitted", "pending",
                                                                      "gone", "odd"])), max_size=14))
def test_compaction_gives_back_every_record_as_it_was(tmp_path: Path, steps: list[tuple[str, str]]) -> None:
    folder = tmp_path / "b"
    shutil.rmtree(folder, ignore_errors=True)
    ledger = Ledger.open(folder, "rows")
    for n, (job_id, what) in enumerate(steps):
        job = Job(job_id=job_id, index=n, request={"prompt": f"p{n}"}, axes={"n": n}, replica=0, name=job_id)
        if what == "gone":
            ledger.records.get(job_id)  # (a record, if any, kept as it is)
            continue
        ledger.submitting(job)
        task = str(uuid.UUID(int=n + 1)) if what != "odd" else f"task-{n}"
        ledger.submitted(job_id, task)
        if what in ("done", "odd"):
            ledger.done(job_id, f"images/{job_id}.png", n, "ab" * 32, n, derived="0123456789abcdef"
                        if n % 2 else None, size_got="8*8" if what == "odd" else None)
        elif what == "failed":
            ledger.failed(job_id, Failed(Failure.TIMEOUT, "late"), task_id=task)
        elif what == "pending":
            ledger.reset(job_id)
    ledger.compact()
    before = seen(ledger)
    ledger.close()
    again = Ledger.read(folder)
    got = seen(again)
    assert (got["records"], got["order"], got["stats"][1:3]) == (before["records"], before["order"],
                                                                 before["stats"][1:3])


def test_get_keeps_the_record_it_gives_and_a_walk_reads_only(tmp_path: Path) -> None:
    ids = [hashlib.sha256(bytes([i])).hexdigest()[:16] for i in range(3)]
    again = read(tmp_path, "b", [block_line([good_row(i, job) for i, job in enumerate(ids)])])
    records = again.records
    assert records.packed() == 3 and list(records) == ids and ids[1] in records and "x" not in records
    walked = dict(records.items())
    assert all(type(rec) is PackedRecord for rec in walked.values())
    with pytest.raises(AttributeError):
        walked[ids[0]].seen = True
    rec = records.get(ids[0])
    assert records.get(ids[0]) is rec and records[ids[0]] is rec and records.packed() == 2
    rec.seen = True
    assert records[ids[0]].seen and [job_id for job_id, _ in records.loose()] == [ids[0]]
    assert list(records) == ids  # unpacking keeps the order


def test_the_later_of_two_tables_wins_each_job_packed_or_not(tmp_path: Path) -> None:
    a, b = IDS[0], "job-b"  # a key of 8 bytes and a key that is the id itself

    def table(name: str, at_a: float, at_b: float) -> Records:
        return read(tmp_path, name, [block_line([{**good_row(1, a), "at": at_a},
                                                 {**good_row(2, b), "at": at_b}])]).records

    mine, theirs = table("mine", 5.0, 9.0), table("theirs", 7.0, 8.0)
    assert mine.packed() == theirs.packed() == 2
    mine.take_newer(theirs, holds=lambda job_id: job_id != b)
    assert mine.packed() == 2 and (mine[a].at, mine[b].at) == (7.0, 9.0)
    again = table("again", 6.0, 1.0)
    again.get(b)  # held as a record now: still compared by its time
    again.take_newer(theirs)
    assert (again[a].at, again[b].at) == (7.0, 8.0)


def test_key_of_is_one_to_one() -> None:
    assert key_of("0123456789abcdef") == bytes.fromhex("0123456789abcdef")
    for other in ("0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", " 123456789abcdef", "job"):
        assert key_of(other) == other


def test_a_planted_or_torn_block_is_skipped_and_counted(tmp_path: Path) -> None:
    ids = [hashlib.sha256(bytes([i])).hexdigest()[:16] for i in range(4)]
    good = block_line([good_row(i, job) for i, job in enumerate(ids[:2])])
    uneven = json.loads(block_line([good_row(2, ids[2])]))
    uneven["file"].append("images/extra.png")  # one list longer than the others
    planted = [good_row(3, ids[3])]
    planted[0]["file"] = "../../outside.png"
    again = read(tmp_path, "b", [good, json.dumps(uneven).encode(), block_line(planted),
                                 json.dumps({ROWS_KEY: 1, "job": "not a list"}).encode()])
    assert list(again.records) == ids[:2]
    assert again.stats.bad_lines == 3  # the uneven block, the planted row, the block with no list


def test_a_ledger_of_a_later_format_is_refused_untouched(tmp_path: Path) -> None:
    from batchgen.errors import LedgerError

    data = orjson.dumps({**HEADER, "batchgen_ledger": 3}) + b"\n" + json.dumps({"job": "a", "state": "pending"}).encode()
    (tmp_path / "ledger.jsonl").write_bytes(data)
    for opening in (lambda: Ledger.read(tmp_path), lambda: Ledger.open(tmp_path, "rows")):
        with pytest.raises(LedgerError, match="later batchgen .*format 3.*Nothing was changed"):
            opening()
    assert (tmp_path / "ledger.jsonl").read_bytes() == data


def test_packed_jobs_compact_to_the_same_block_as_records_do(tmp_path: Path) -> None:
    """A chunk of jobs all packed with every field is encoded column by column at once; the
    same jobs held as records are encoded job by job: the same bytes."""
    rows_ = [good_row(i, hashlib.sha256(bytes([i])).hexdigest()[:16]) for i in range(40)]
    rows_[3]["gone"], rows_[5]["sidecar_bytes"], rows_[7]["at"] = 1, 0, 0.0
    packed = read(tmp_path, "a", [block_line(rows_)]).records
    loose = read(tmp_path, "b", [block_line(rows_)]).records
    for job_id in list(loose):
        loose.get(job_id)
    assert (packed.packed(), loose.packed()) == (40, 0)
    dumps = orjson.dumps
    assert list(block_lines(packed, dumps, 1 << 20)) == list(block_lines(loose, dumps, 1 << 20))
    small = list(block_lines(packed, dumps, 2000))  # split in halves until each fits
    assert len(small) > 1 and all(len(line) < 2000 for line in small)
    assert [job for line in small for job in orjson.loads(line)["job"]] == list(packed)


def test_a_pass_marks_packed_jobs_seen_in_their_rows(tmp_path: Path) -> None:
    rows_ = [good_row(i, hashlib.sha256(bytes([i])).hexdigest()[:16]) for i in range(4)]
    rows_[2]["gone"] = 1
    records = read(tmp_path, "b", [block_line(rows_)]).records
    ids = list(records)
    seen = records.mark_seen(ids[0])
    assert type(seen) is PackedRecord and seen.seen and records.mark_seen("f" * 16) is None
    assert records.packed() == 4 and records.packed(seen=True) == 1 and records.packed(gone=True) == 1
    assert records.packed(seen=False, gone=False) == 2
    assert [job_id for job_id, rec in records.items() if rec.seen] == [ids[0]]
    rec = records.get(ids[0])  # unpacked for good: the mark goes with it
    assert rec.seen and type(rec) is not PackedRecord and records.mark_seen(ids[0]) is rec


def test_a_run_packs_each_job_it_finishes_and_keeps_its_mark(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "rows")
    rows_ = [good_row(i, hashlib.sha256(bytes([i])).hexdigest()[:16]) for i in range(3)]
    for i, row in enumerate(rows_):
        job = Job(job_id=row["job"], index=i, request={"prompt": "p"}, axes={}, replica=0, name=row["job"])
        ledger.submitting(job)  # marks the job seen: the run's jobs are the manifest's
        ledger.submitted(row["job"], row["task_id"] if i else "not-a-uuid")
        ledger.done(row["job"], row["file"], row["bytes"], row["sha256"], row["sidecar_bytes"],
                    derived=row["info"])
    records = ledger.records
    assert records.packed() == records.packed(seen=True) == 2  # the one with no UUID stays a record
    assert ledger.record_membership() == (0, 0)  # every job still seen: none vanished
    rec = records.get(rows_[1]["job"])
    assert (rec.seen, rec.task_id, rec.file, rec.size, rec.get("derived")) == (
        True, rows_[1]["task_id"], rows_[1]["file"], rows_[1]["bytes"], rows_[1]["info"])
    ledger.close()


def test_a_header_names_its_batch_where_an_older_batchgen_finds_none(tmp_path: Path) -> None:
    """An older batchgen reads ``batch`` from the header: finding none, it refuses the folder
    instead of taking block lines for unreadable ones (which its compaction would drop)."""
    from batchgen.storage.batch import batch_in

    ledger = Ledger.open(tmp_path, "rows")
    ledger.compact()
    ledger.close()
    head = json.loads((tmp_path / "ledger.jsonl").read_bytes().splitlines()[0])
    assert "batch" not in head and head["batch_name"] == "rows" and head["batchgen_ledger"] == 2
    assert Ledger.read(tmp_path).batch == batch_in(tmp_path) == "rows"
    (tmp_path / "ledger.jsonl").write_bytes(orjson.dumps(HEADER) + b"\n")  # as before format 2
    assert Ledger.read(tmp_path).batch == batch_in(tmp_path) == "rows"
